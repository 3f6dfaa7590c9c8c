"""``run_suite --parallel N`` and ``--only``: concurrent runs give the weights of one-at-a-time runs, a child's exit
code becomes its status, a signal reaches every child once (each checkpoints; a rerun resumes), and ``--only``
names runs of the suite or fails with one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from assignment_experiments import parallel_runs, run_suite
from tests.test_runner import ROOT, final_weights, tiny_config

MODULE = ["-m", "assignment_experiments.run_suite"]


def write_suite(tmp_path: Path, names: list[str], **train) -> Path:
    tiny_config(tmp_path, **train)
    runs = [{"name": name, "set": {"optim.lr": 1e-2 / (i + 1), "train.seed": i}} for i, name in enumerate(names)]
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"description": "test suite", "base": "tiny.json", "runs": runs}))
    return suite


def test_parallel_runs_give_the_weights_of_sequential_runs_with_a_log_each(tmp_path, capsys):
    suite = write_suite(tmp_path, ["a", "b"])
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(tmp_path / "seq")]) == 0
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(tmp_path / "par"), "--parallel", "2"]) == 0
    out = capsys.readouterr().out
    for name in "ab":
        sequential, parallel = final_weights(tmp_path / "seq" / name), final_weights(tmp_path / "par" / name)
        assert sequential.keys() == parallel.keys()
        assert all(torch.equal(sequential[k], parallel[k]) for k in sequential), name
        log = tmp_path / "par" / "report" / "suite" / "logs" / f"{name}.log"
        assert "final" in log.read_text().lower(), log.read_text()
        assert f"[suite] {name}: done after" in out and "final val loss" in out
    assert "2/2 done, 0 running, 0 waiting" in out
    assert (tmp_path / "par" / "report" / "suite").is_dir()  # the suite's report, as without --parallel
    # a second call finds everything finished and starts nothing
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(tmp_path / "par"), "--parallel", "2"]) == 0
    assert capsys.readouterr().out.count("finished already, skipping") == 2


def test_one_at_a_time_a_run_that_cannot_start_is_reported_and_the_others_still_run(tmp_path, capsys):
    from assignment_experiments.run_lock import RunLock

    suite, runs = write_suite(tmp_path, ["a", "b", "c"]), tmp_path / "runs"
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(runs), "--only", "b"]) == 0
    (runs / "b" / "summary.json").unlink()  # b looks interrupted, and its suite entry now asks for another lr
    data = json.loads(suite.read_text())
    data["runs"][1]["set"]["optim.lr"] = 0.5
    suite.write_text(json.dumps(data))
    before = {p.relative_to(runs / "b"): p.read_bytes() for p in (runs / "b").rglob("*") if p.is_file()}
    capsys.readouterr()
    with RunLock(runs / "a"):  # another process holds a
        status = run_suite.run_suite(suite, runs, [])
        assert status == {"a": "held by another process", "b": "failed (exit 2)", "c": "done"}
        assert run_suite.exit_code(status) == 1  # b's refusal fails the suite; a is the other process's work
        assert run_suite.exit_code({"a": "held by another process", "c": "done"}) == 0
    out = capsys.readouterr().out
    assert "[suite] a: not run: " in out and "in use by another process" in out
    assert "[suite] b: not run: " in out and "optim.lr" in out
    assert (runs / "c" / "summary.json").is_file()  # the run after the refused ones still ran
    after = {p.relative_to(runs / "b"): p.read_bytes() for p in (runs / "b").rglob("*") if p.is_file()}
    assert after == before  # the refused run's folder is left exactly as it was
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(runs), "--only", "a"]) == 0  # once a is free


def test_one_at_a_time_a_run_another_process_finished_meanwhile_is_skipped(tmp_path, monkeypatch):
    from assignment_experiments import runner

    suite, runs, started = write_suite(tmp_path, ["a", "b"]), tmp_path / "runs", []

    def fake_run(config, name, runs_dir, resume):  # while a trains here, another process finishes b
        started.append(name)
        for run in ("a", "b"):
            (runs_dir / run).mkdir(parents=True, exist_ok=True)
            (runs_dir / run / "summary.json").write_text("{}")

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    assert run_suite.run_suite(suite, runs, [], only=["a", "b"]) == {"a": "done", "b": "skipped"}
    assert started == ["a"]


def test_a_childs_exit_code_becomes_its_status_and_the_suites_exit_code(tmp_path, monkeypatch, capsys):
    codes = {"ok": 0, "nan": 3, "locked": 2}

    def fake_child(suite, runs_dir, name, overrides):
        return [sys.executable, "-c", f"print('child {name}'); raise SystemExit({codes[name]})"]

    monkeypatch.setattr(parallel_runs, "child_command", fake_child)
    status = parallel_runs.run_parallel(tmp_path / "s.json", tmp_path, list(codes), {n: [] for n in codes}, jobs=3)
    assert status == {"ok": "done", "nan": "diverged", "locked": "failed (exit 2)"}
    log = tmp_path / "report" / "s" / "logs" / "locked.log"
    assert log.read_text().endswith(": starting locked\nchild locked\n")
    parallel_runs.run_parallel(tmp_path / "s.json", tmp_path, ["locked"], {"locked": []}, jobs=1)
    assert log.read_text().count("child locked\n") == 2  # a second attempt appends: the first one's log is kept
    assert "see " in capsys.readouterr().out  # a run that did not finish points to its log
    assert run_suite.exit_code(status) == 1
    assert run_suite.exit_code({"ok": "done", "nan": "diverged"}) == 3
    assert run_suite.exit_code({"ok": "done", "old": "skipped"}) == 0
    assert [parallel_runs.outcome(c) for c in (0, 3, 1, 130, 143, -9)] == [
        "done", "diverged", "failed (exit 1)", "interrupted", "interrupted", "interrupted",
    ]  # fmt: skip


def test_cpu_children_share_the_cores_unless_the_suite_sets_threads(tmp_path, monkeypatch):
    assert parallel_runs.threads_per_child(4, cpu_count=16) == 4 and parallel_runs.threads_per_child(8, 2) == 1
    suite = write_suite(tmp_path, ["a", "b"])
    data = json.loads(suite.read_text())
    data["runs"][0]["set"]["train.num_threads"] = 0  # "all cores": divided among the children
    suite.write_text(json.dumps(data))
    seen = {}
    monkeypatch.setattr(parallel_runs, "run_parallel", lambda s, r, n, overrides, j, t: seen.update(overrides) or {})
    monkeypatch.setattr(parallel_runs, "threads_per_child", lambda jobs: 3)
    run_suite.run_suite(suite, tmp_path / "runs", ["optim.lr=0.001"], parallel=4)
    assert seen == {"a": ["optim.lr=0.001", "train.num_threads=3"], "b": ["optim.lr=0.001"]}  # b keeps its 1


def test_only_runs_the_named_runs_and_an_unknown_name_is_one_line_exit_2(tmp_path, capsys):
    suite = write_suite(tmp_path, ["a", "b"])
    runs = tmp_path / "runs"
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(runs), "--only", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "config error: --only nope: no such run in the suite; its runs: ['a', 'b']"
    assert not runs.exists()
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(runs), "--only", "b"]) == 0
    assert sorted(p.name for p in runs.iterdir()) == ["b"]  # no report: --only runs a part of the suite
    with pytest.raises(SystemExit):
        run_suite.main(["--suite", str(suite), "--parallel", "0"])
    assert "--parallel must be at least 1" in capsys.readouterr().err


def test_sigterm_reaches_every_child_once_each_checkpoints_and_a_rerun_resumes(tmp_path):
    suite = write_suite(tmp_path, ["a", "b", "c"], max_steps=100_000, checkpoint_every=0, eval_every=100_000)
    runs = tmp_path / "runs"
    command = [sys.executable, *MODULE, "--suite", str(suite), "--runs-dir", str(runs), "--parallel", "2"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    metrics = [runs / name / "metrics.jsonl" for name in "ab"]
    while not all(m.is_file() and m.read_text() for m in metrics) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=90)
    finally:
        process.kill()
    assert process.returncode == 143, (out, err)
    assert "SIGTERM: passed on to 2 running run(s)" in out
    assert "rerun it to resume" in err.strip().splitlines()[-1] and "Traceback" not in err
    assert not (runs / "c").exists()  # no new run starts after a signal
    steps = []
    for name in "ab":
        checkpoints = sorted((runs / name / "checkpoints").glob("step_*.pt"))
        assert checkpoints and not (runs / name / "summary.json").exists() and not (runs / name / ".lock").exists()
        steps.append(int(checkpoints[-1].stem.split("_")[1]))
    target = max(steps) + 2
    rerun = ["--suite", str(suite), "--runs-dir", str(runs), "--set", f"train.max_steps={target}"]
    assert run_suite.main(rerun) == 0  # in this process: one at a time resumes what the parallel call left
    for name in "abc":
        assert json.loads((runs / name / "summary.json").read_text())["steps"] == target


def test_time_limit_stops_the_running_run_with_a_checkpoint_and_the_same_command_goes_on(tmp_path, capsys, monkeypatch):
    """One at a time (``--parallel`` 1): the limit stops run a mid-training with a checkpoint, b never starts,
    exit 4 with the command to go on; that command, given time, resumes a from its checkpoint and runs b."""
    suite = write_suite(tmp_path, ["a", "b"], max_steps=100_000, checkpoint_every=0, eval_every=100_000)
    runs = tmp_path / "runs"
    metrics = runs / "a" / "metrics.jsonl"
    # the limit's clock stands still until run a is training (a loaded machine may take seconds to start a child),
    # then jumps past any limit: the test does not depend on how fast this machine starts a process
    monkeypatch.setattr(parallel_runs, "clock", lambda: 1e9 if metrics.is_file() and metrics.read_text() else 0.0)
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(runs), "--time-limit", "8s"]) == 4
    monkeypatch.undo()
    out, err = capsys.readouterr()
    assert "time limit of 8 s reached: 1 running run(s) finish their step" in out and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("time limit of 8 s reached: 0 run(s) finished this time, 1 stopped, 1 not started;")
    assert line.endswith("--time-limit 8s") and "to go on where it stopped, rerun: uv run python -m" in line
    checkpoints = sorted((runs / "a" / "checkpoints").glob("step_*.pt"))
    assert checkpoints and not (runs / "a" / "summary.json").exists() and not (runs / "b").exists()
    stopped_at = int(checkpoints[-1].stem.split("_")[1])
    target = stopped_at + 2
    more = ["--suite", str(suite), "--runs-dir", str(runs), "--set", f"train.max_steps={target}", "--time-limit", "1h",
            "--parallel", "2"]  # fmt: skip
    assert run_suite.main(more) == 0  # everything finishes inside the limit: exit 0
    assert json.loads((runs / "a" / "summary.json").read_text())["steps"] == target
    assert f"resumed at step {stopped_at}" in (runs / "report" / "suite" / "logs" / "a.log").read_text()
    assert json.loads((runs / "b" / "summary.json").read_text())["steps"] == target


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("45m", 2700), ("1.5h", 5400)])
def test_time_limit_durations(text, seconds):
    assert run_suite.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "soon", "5d", "inf", "nan"])
def test_a_bad_time_limit_is_a_usage_error(text, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_suite.main(["--suite", "x.json", f"--time-limit={text}"])
    assert exit_info.value.code == 2 and "positive duration such as 3600, 90s, 45m or 1.5h" in capsys.readouterr().err


def test_the_time_limit_line_names_runs_that_failed_or_diverged():
    status = {"a": "done", "b": "interrupted", "c": "diverged", "d": "failed (exit 2)", "e": "not started"}
    line = str(parallel_runs.TimeLimitReached(5400, status))
    assert line == (
        "time limit of 1.5 h reached: 1 run(s) finished this time, 1 stopped, 1 not started, "
        "2 diverged or failed (c, d: see their logs)"
    )


def test_a_finished_run_whose_suite_entry_changed_is_skipped_with_a_note_naming_the_change(tmp_path, capsys):
    suite, runs = write_suite(tmp_path, ["a"]), tmp_path / "runs"
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(runs)]) == 0
    capsys.readouterr()
    argv = ["--suite", str(suite), "--runs-dir", str(runs), "--set", "train.max_steps=7"]  # resumable: no note
    assert run_suite.main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == "[suite] a: finished already, skipping"
    data = json.loads(suite.read_text())
    data["runs"][0]["set"]["optim.lr"] = 0.5
    suite.write_text(json.dumps(data))
    assert run_suite.main(["--suite", str(suite), "--runs-dir", str(runs)]) == 0  # still skipped: nothing is lost
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("[suite] a: finished already, skipping (note: it was trained with other settings")
    assert "optim.lr: 0.01 -> 0.5" in line and f"move {runs / 'a'} away or give the run a new name" in line
