"""``benchmarks/gpu_mqar_grid.py``, the one-command GPU MQAR grid, exercised on CPU so that it cannot rot: its smoke
run trains the GPU suite's first two runs for three tiny steps through ``run_suite``, packs them without
checkpoints, and a second call given the unpacked runs (``--finished-in``) skips them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_mqar_grid.py"
SUITE = ROOT / "assignment_experiments" / "configs" / "suites" / "mqar_zoology_gpu.json"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_mqar_grid", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # as on the GPU machine: plain python, the repository on the path
    command = [sys.executable, str(SCRIPT), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_smoke_grid_trains_packs_without_checkpoints_and_a_second_lease_skips_finished_runs(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    done = run_script("--out", str(out), "--smoke", "--parallel", "2", "--runs-dir", str(runs))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + (out / "mqar_grid.log").read_text()
    files = ["mqar_grid.log", "mqar_grid.md", "mqar_grid_logs.tar.gz", "mqar_grid_runs.tar.gz"]
    assert sorted(p.name for p in out.iterdir()) == files
    first_two = [run["name"] for run in json.loads(SUITE.read_text())["runs"][:2]]
    assert all((runs / name / "checkpoints").is_dir() for name in first_two)  # trained with checkpoints ...
    with tarfile.open(out / "mqar_grid_runs.tar.gz") as tar:
        members = tar.getnames()
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert not [m for m in members if "checkpoints" in m or m.endswith(".pt")]  # ... packed without them
    with tarfile.open(out / "mqar_grid_logs.tar.gz") as tar:
        assert sorted(tar.getnames()) == sorted(f"logs/{name}.log" for name in first_two)  # nothing unfinished
    for name in first_two:
        summary = json.loads((tmp_path / "unpacked" / name / "summary.json").read_text())
        assert summary["steps"] == 3 and 0.0 <= summary["final_val_accuracy"] <= 1.0
    rows = (out / "mqar_grid.md").read_text().splitlines()
    assert rows[0] == "# mqar_zoology_gpu.json: run_suite exit 0 (0 all done, 4 time limit)"
    assert [r.split(" | ")[1] for r in rows[4:]] == ["finished", "finished"]
    # the next lease: the finished runs come from the unpacked archive and nothing trains again
    again = run_script("--out", str(tmp_path / "out2"), "--smoke", "--runs-dir", str(tmp_path / "runs2"),
                       "--finished-in", str(tmp_path / "unpacked"))  # fmt: skip
    assert again.returncode == 0 and "2 run(s) already finished" in again.stdout
    assert (tmp_path / "out2" / "mqar_grid.log").read_text().count("finished already, skipping") == 2


def test_table_and_archives_name_every_run_state(tmp_path):
    grid = load_script()
    runs, out = tmp_path / "runs", tmp_path / "out"
    (runs / "done").mkdir(parents=True)
    summary = {"steps": 1200, "target_reached_step": 1200, "final_val_accuracy": 0.9912, "runtime_s": 90}
    (runs / "done" / "summary.json").write_text(json.dumps(summary))
    for name in ("stopped", "diverged", "broken"):
        (runs / name / "checkpoints").mkdir(parents=True)
        (runs / name / "checkpoints" / "step_5.pt").write_bytes(b"x")
        (runs / name / "metrics.jsonl").write_text("{}\n")
    logs = runs / "report" / "grid" / "logs"
    logs.mkdir(parents=True)
    (logs / "broken.log").write_text("ValueError: ...\n")
    suite_output = (
        "[suite] stopped: interrupted after 8.0 min (see x.log) | 1/4 done\n"
        "[suite] diverged: diverged after 2.0 min (see x.log) | 1/4 done\n"
        "[suite] broken: failed (exit 2) after 0.1 min (see x.log) | 1/4 done\n"
    )
    names = ["done", "stopped", "diverged", "broken", "waiting"]
    rows = grid.table(names, runs, suite_output).splitlines()[2:]
    assert rows == [
        "| done | finished | 1200 | 1200 | 0.991 | 1.5 |",
        "| stopped | stopped at the time limit | - | - | - | - |",
        "| diverged | diverged: see logs/diverged.log | - | - | - | - |",
        "| broken | failed (exit 2): see logs/broken.log | - | - | - | - |",
        "| waiting | not started | - | - | - | - |",
    ]
    out.mkdir()
    assert grid.pack(names, runs, "grid", out) == (1, 3)
    with tarfile.open(out / "mqar_grid_runs.tar.gz") as tar:
        assert tar.getnames() == ["done", "done/summary.json"]  # only finished runs join results/runs
    with tarfile.open(out / "mqar_grid_logs.tar.gz") as tar:
        names_in = tar.getnames()
    assert "logs/broken.log" in names_in and "unfinished/stopped/metrics.jsonl" in names_in
    assert not [n for n in names_in if "checkpoints" in n or n.endswith(".pt")]


def test_bad_suite_or_run_name_is_a_usage_error(tmp_path):
    done = run_script("--out", str(tmp_path), "--suite", str(tmp_path / "none.json"))
    assert done.returncode == 2 and "does not exist" in done.stderr
    done = run_script("--out", str(tmp_path), "--only", "no_such_run")
    assert done.returncode == 2 and "not in mqar_zoology_gpu.json" in done.stderr
    done = run_script("--out", str(tmp_path), "--time-limit", "soon")
    assert done.returncode == 2 and "positive duration" in done.stderr and not list(tmp_path.iterdir())
