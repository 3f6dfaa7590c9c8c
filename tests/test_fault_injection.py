"""Faults a user or a job scheduler causes, injected into the runner, the data cache and the tokenizer CLIs.

One test (or a few) per required behaviour of the reliability issue: signals, the run lock, checkpoint fallback,
``--resume`` checks (missing run, other data), checked caches and token files, output checks before work, tolerant
metrics and atomic writes, one-line user errors, followable divergence advice, no code-running ``torch.load`` and
the BPE vocabulary shortfall. Tiny configs (``tiny_config``: a 1-layer Transformer on 1,380 tokens) keep each fast;
a real subprocess is used where a signal must reach another process.
"""

from __future__ import annotations

import ast
import errno
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import assignment_experiments.runner as runner
from assignment_experiments.run_experiment import main
from assignment_experiments.run_files import atomic_write_text
from assignment_experiments.run_lock import RunLock
from cs336_basics.data.cache import build_entry, remove_stale_builds
from cs336_basics.data.pipeline import prepare_corpus
from cs336_basics.training.checkpoint import read_checkpoint
from cs336_basics.training.loop import Trainer
from tests.test_runner import ROOT, final_weights, tiny_config, train_losses

MODULE = ["-m", "assignment_experiments.run_experiment"]


def run_args(config: Path, runs: Path, name: str = "r", *extra: str) -> list[str]:
    return ["--config", str(config), "--runs-dir", str(runs), "--name", name, *extra]


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def followed(command_line: str) -> list[str]:
    """The arguments of a printed ``uv run python -m assignment_experiments.run_experiment ...`` command."""
    words = shlex.split(command_line)
    assert words[:5] == ["uv", "run", "python", "-m", "assignment_experiments.run_experiment"], words[:5]
    return words[5:]


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = final_weights(a), final_weights(b)
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def signal_after_step(monkeypatch, step: int, *signums: int) -> None:
    """Deliver ``signums`` to this process right after optimizer step ``step`` (inside the training loop)."""
    original = Trainer.train_step

    def train_step(self):
        metrics = original(self)
        if self.state.step == step:
            for signum in signums:
                os.kill(os.getpid(), signum)
        return metrics

    monkeypatch.setattr(Trainer, "train_step", train_step)


def text_corpus(path: Path, seed: int = 0, docs: int = 60) -> Path:
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then", "slept"]
    path.write_text("\n\n".join(" ".join(rng.choice(words, size=12)) + "." for _ in range(docs)) + "\n")
    return path


def text_config(tmp_path: Path, text: Path, **data) -> Path:
    path = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    config = json.loads(path.read_text())
    config["data"] = {"source": "text", "path": str(text), "tokenizer": "bpe", "tokenizer_vocab_size": 280,
                      "cache_dir": str(tmp_path / "cache"), "final_eval_max_tokens": 256, **data}  # fmt: skip
    out = tmp_path / "text.json"
    out.write_text(json.dumps(config))
    return out


def unwritable_dir(tmp_path: Path) -> Path:
    """A directory this process cannot create files in (root ignores permissions: use sysfs, read-only to all)."""
    if os.geteuid() == 0:
        if not Path("/sys").is_dir():
            pytest.skip("running as root without /sys: no unwritable directory to test with")
        return Path("/sys/cs336-out")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder / "out"


# 1. SIGTERM / SIGINT ---------------------------------------------------------------------------------------------
def test_sigterm_to_a_training_process_saves_the_step_exits_143_and_prints_a_working_resume_command(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=100_000, checkpoint_every=0, eval_every=100_000)
    runs = tmp_path / "runs"
    command = [sys.executable, *MODULE, *run_args(config, runs)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    metrics = runs / "r" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while (not metrics.is_file() or not metrics.read_text()) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    # 2. while it trains, a second process on the same name is refused and told who holds the run
    assert main(run_args(config, runs)) == 2
    err = capsys.readouterr().err.strip()
    assert f"in use by another process (pid {process.pid} on {socket.gethostname()}, started 20" in err, err

    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=60)
    finally:
        process.kill()
    err = process.stderr.read()
    assert code == 143, err
    assert "Traceback" not in err
    line = last_line(err)
    step = int(line.split(" at step ")[1].split(":")[0])
    checkpoint = runs / "r" / "checkpoints" / f"step_{step:07d}.pt"
    assert f"saved in {checkpoint}" in line and read_checkpoint(checkpoint)["iteration"] == step
    assert not (runs / "r" / ".lock").exists()
    assert main([*followed(line.split("resume with: ")[1]), "--set", f"train.max_steps={step + 2}"]) == 0
    assert json.loads((runs / "r" / "summary.json").read_text())["steps"] == step + 2


def test_ctrl_c_mid_run_checkpoints_that_step_and_the_resumed_run_matches_an_uninterrupted_one(
    tmp_path, capsys, monkeypatch
):
    config = tiny_config(tmp_path, max_steps=8, checkpoint_every=4, eval_every=4)
    runs = tmp_path / "runs"
    assert main(run_args(config, runs, "straight")) == 0
    signal_after_step(monkeypatch, 3, signal.SIGINT)
    capsys.readouterr()
    assert main(run_args(config, runs)) == 130
    line = last_line(capsys.readouterr().err)
    assert "interrupted by SIGINT at step 3" in line and "step_0000003.pt" in line, line
    monkeypatch.undo()
    assert main(followed(line.split("resume with: ")[1])) == 0
    assert_same_weights(runs / "straight", runs / "r")
    assert train_losses(runs / "r") == train_losses(runs / "straight")


def test_a_second_ctrl_c_stops_at_once_without_finishing_the_step(tmp_path, capsys, monkeypatch):
    config = tiny_config(tmp_path, max_steps=8, checkpoint_every=2, eval_every=8)
    runs = tmp_path / "runs"
    signal_after_step(monkeypatch, 3, signal.SIGINT, signal.SIGINT)
    assert main(run_args(config, runs)) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "stopped at once" in last_line(err)
    names = sorted(p.name for p in (runs / "r" / "checkpoints").iterdir())
    assert names == ["step_0000002.pt"]  # nothing written for step 3, no temporary file left
    assert not (runs / "r" / ".lock").exists()


def test_ctrl_c_while_preparing_data_exits_130_with_one_line_and_leaves_no_run(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("the signal should have stopped data preparation")

    monkeypatch.setattr(runner, "prepare_data", interrupted)
    config = tiny_config(tmp_path)
    assert main(run_args(config, tmp_path / "runs")) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted by SIGINT before any checkpoint was written"
    assert not (tmp_path / "runs" / "r").exists()


def test_forked_workers_leave_ctrl_c_to_the_parent_and_still_die_of_sigterm():
    from cs336_basics.training.interrupt import StopSignals

    with StopSignals():
        codes = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            child = os.fork()
            if child == 0:  # a pool worker: inherits the handler
                os.kill(os.getpid(), signum)
                time.sleep(0.2)
                os._exit(7)
            codes.append(os.waitpid(child, 0)[1])
    assert os.WIFEXITED(codes[0]) and os.WEXITSTATUS(codes[0]) == 7  # SIGINT ignored: the parent decides
    assert os.WIFSIGNALED(codes[1]) and os.WTERMSIG(codes[1]) == signal.SIGTERM  # terminable by Pool.terminate


# 2. the run lock -------------------------------------------------------------------------------------------------
def test_a_run_held_by_another_process_exits_2_naming_it_and_is_left_untouched(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    runs = tmp_path / "runs"
    assert main(run_args(config, runs)) == 0
    before = {p.name: p.stat().st_mtime_ns for p in (runs / "r").rglob("*")}
    with RunLock(runs / "r"):  # another holder (flock conflicts between open files, even in one process)
        code = main(run_args(config, runs, "r", "--resume", "--set", "train.max_steps=4"))
        assert {p.name: p.stat().st_mtime_ns for p in (runs / "r").rglob("*") if p.name != ".lock"} == before
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert f"pid {os.getpid()} on {socket.gethostname()}, started 20" in err


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_notice(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / ".lock").write_text(json.dumps({"pid": 4_000_000, "host": "gone-host", "started": "2026-01-01"}))
    assert main(run_args(config, tmp_path / "runs")) == 0
    err = capsys.readouterr().err
    assert "taking over the lock" in err and "pid 4000000 on gone-host" in err
    assert not (run_dir / ".lock").exists()


# 3. checkpoint fallback and leftovers ----------------------------------------------------------------------------
def test_resume_skips_unloadable_checkpoints_naming_each_and_matches_an_uninterrupted_run(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=8, checkpoint_every=2, eval_every=4, keep_checkpoints=4)
    runs = tmp_path / "runs"
    assert main(run_args(config, runs, "straight")) == 0
    assert main(run_args(config, runs)) == 0
    ckpts = runs / "r" / "checkpoints"
    step8 = (ckpts / "step_0000008.pt").read_bytes()
    (ckpts / "step_0000008.pt").write_bytes(step8[: len(step8) // 2])  # truncated
    (ckpts / "step_0000006.pt").write_bytes(b"")  # empty
    (ckpts / "step_0000004.pt").write_bytes(np.random.default_rng(0).bytes(4096))  # random bytes
    (ckpts / ".step_0000008.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # a kill mid-write
    capsys.readouterr()
    assert main(run_args(config, runs, "r", "--resume")) == 0
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 3
    for line, name in zip(warnings, ["step_0000008.pt", "step_0000006.pt", "step_0000004.pt"], strict=True):
        assert name in line and f"{name}.unreadable" in line
    assert "weights_only" not in err
    assert not list(ckpts.glob("*.tmp"))
    assert (ckpts / "step_0000004.pt.unreadable").is_file()  # kept aside, never deleted
    assert_same_weights(runs / "straight", runs / "r")


def test_dead_cache_builds_are_removed_at_the_next_start_and_live_ones_kept(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    child = os.fork()
    if child == 0:  # a process killed half-way through building an entry
        with build_entry(cache / "tokens-killed") as tmp:
            (tmp / "tokens.bin").write_bytes(b"\0" * 100)
            os._exit(0)
    os.waitpid(child, 0)
    (dead,) = cache.glob("tokens-killed.building-*")
    old_layout = cache / "split-x.building-old"
    old_layout.mkdir()
    os.utime(old_layout, (time.time() - 7200,) * 2)
    live = cache / "split-y.building-live"
    live.mkdir()
    holder = os.open(live / ".owner", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    fresh = cache / "split-z.building-fresh"  # just created, owner file not in place yet
    fresh.mkdir()
    try:
        text = text_corpus(tmp_path / "corpus.txt")
        prepare_corpus(source="text", path=text, tokenizer="bytes", cache_dir=cache)
        assert not dead.exists() and not old_layout.exists()
        assert live.is_dir() and fresh.is_dir()
        assert remove_stale_builds(cache) == []
    finally:
        os.close(holder)
    assert remove_stale_builds(cache) == [live]


# 4. --resume of a run that does not exist ------------------------------------------------------------------------
def test_resume_of_a_missing_run_exits_2_and_creates_nothing(tmp_path, capsys):
    config = tiny_config(tmp_path)
    assert main(run_args(config, tmp_path / "runs", "typo", "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert "no run" in err and "typo" in err and "\n" not in err
    assert not (tmp_path / "runs" / "typo").exists()


# 5. identity on resume -------------------------------------------------------------------------------------------
def test_resume_on_changed_token_data_exits_2_naming_what_changed(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    runs = tmp_path / "runs"
    assert main(run_args(config, runs)) == 0
    tokens = np.load(tmp_path / "tokens.npy")
    np.save(tmp_path / "tokens.npy", tokens[::-1].copy())  # same size, same ids, other data
    capsys.readouterr()
    assert main(run_args(config, runs, "r", "--resume", "--set", "train.max_steps=4")) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on other data" in err and "train tokens sha256" in err and "\n" not in err


def test_resume_after_the_text_changed_exits_2_naming_the_tokenizer(tmp_path, capsys):
    text = text_corpus(tmp_path / "corpus.txt")
    config = text_config(tmp_path, text)
    runs = tmp_path / "runs"
    assert main(run_args(config, runs)) == 0
    text_corpus(text, seed=1)  # an edited source file: a new split, a new BPE, new tokens
    capsys.readouterr()
    assert main(run_args(config, runs, "r", "--resume", "--set", "train.max_steps=4")) == 2
    err = capsys.readouterr().err.strip()
    assert "trained on other data" in err and "tokenizer sha256" in err and "train tokens sha256" in err
    assert json.loads((runs / "r" / "summary.json").read_text())["steps"] == 2


def test_extending_a_run_on_resume_names_the_learning_rate_jump_and_records_it(tmp_path, capsys):
    """A cosine schedule is laid out over max_steps: resuming a finished 4-step run with max_steps 8 moves the lr
    at step 4 from min_lr to the middle of the longer cosine. The notice says so, config_changes.json records it, and
    the log entry's settings name it; a resume that keeps max_steps records nothing."""
    from assignment_experiments import report
    from cs336_basics.optim.schedules import cosine_with_warmup

    config = tiny_config(tmp_path, max_steps=4, eval_every=4, checkpoint_every=2, keep_checkpoints=4)
    runs = tmp_path / "runs"
    assert main(run_args(config, runs)) == 0
    capsys.readouterr()
    assert main(run_args(config, runs, "r", "--resume", "--set", "train.max_steps=8")) == 0
    err = capsys.readouterr().err
    was = cosine_with_warmup(4, 1e-2, 1e-3, 2, 4)  # = min_lr: the 4-step run had finished its cosine
    now = cosine_with_warmup(4, 1e-2, 1e-3, 2, 8)
    assert was == pytest.approx(1e-3) and now > 5 * was
    assert "train.max_steps 4 -> 8 on resume: the cosine schedule" in err
    assert f"step 5 trains at lr {now:.3g} where the run's schedule gives {was:.3g}" in err  # as metrics.jsonl counts
    records = [json.loads(x) for x in (runs / "r" / "metrics.jsonl").read_text().splitlines()]
    lrs = {r["step"]: r["lr"] for r in records if r["kind"] == "train"}
    assert lrs[6] == pytest.approx(cosine_with_warmup(5, 1e-2, 1e-3, 2, 8))  # the step logged as 6 ran at it=5
    changes = json.loads((runs / "r" / "config_changes.json").read_text())
    assert [(c["step"], c["key"], c["change"]) for c in changes] == [(4, "train.max_steps", "4 -> 8")]
    entry = report.run_entry(report.load_run(runs / "r"), {}, tmp_path)
    assert "changed on resume (the values above are the final ones): train.max_steps 4 -> 8 at step 4" in entry
    # A resume that keeps max_steps changes nothing: no notice, no record, and a record no checkpoint backs (left by
    # a resume killed before its first checkpoint) is removed.
    assert main(run_args(config, runs, "q")) == 0
    (runs / "q" / "config_changes.json").write_text('[{"step": 4, "key": "train.max_steps", "change": "4 -> 8"}]')
    capsys.readouterr()
    assert main(run_args(config, runs, "q", "--resume")) == 0
    assert "on resume" not in capsys.readouterr().err and not (runs / "q" / "config_changes.json").exists()
    # Shortened below the step it is at: nothing trains, and the notice says so instead of naming a rate.
    assert main(run_args(config, runs, "q", "--resume", "--set", "train.max_steps=2")) == 0
    assert "train.max_steps 4 -> 2 on resume: the run is already at step 4, so no step is trained" in (
        capsys.readouterr().err
    )
    assert not (runs / "q" / "config_changes.json").exists()


def test_extending_a_wsd_run_while_its_decay_changes_compares_the_runs_own_schedule(tmp_path, capsys):
    """The old rate comes from the checkpoint's config: rebuilding it from the new one (decay 4 over 4 steps, with
    warmup 2) would not even be a valid schedule. A finished WSD run ends at min_lr; extended, it is back at max."""
    config = tiny_config(tmp_path, max_steps=4, eval_every=4, checkpoint_every=2)
    runs = tmp_path / "runs"
    wsd = ("--set", "optim.schedule=wsd", "--set", "optim.decay_steps=2")
    assert main(run_args(config, runs, "r", *wsd)) == 0
    capsys.readouterr()
    longer = ("--set", "train.max_steps=8", "--allow-change", "optim.decay_steps=4")
    assert main(run_args(config, runs, "r", *wsd[:2], "--resume", *longer)) == 0
    err = capsys.readouterr().err
    assert "train.max_steps 4 -> 8 on resume: the wsd schedule" in err
    assert "step 5 trains at lr 0.01 where the run's schedule gives 0.001" in err
    changes = json.loads((runs / "r" / "config_changes.json").read_text())
    assert [c["key"] for c in changes] == ["optim.decay_steps", "train.max_steps"]


# 6. the cache never trains a tokenizer on corrupted text ---------------------------------------------------------
def test_a_same_size_corruption_of_the_split_text_is_rebuilt_before_bpe_training(tmp_path, capsys):
    text = text_corpus(tmp_path / "corpus.txt")
    cache = tmp_path / "cache"
    prepare_corpus(source="text", path=text, tokenizer="bytes", cache_dir=cache)  # caches the split only
    (split,) = cache.glob("split-text-*")
    clean = (split / "train.txt").read_bytes()
    (split / "train.txt").write_bytes(clean.replace(b"cat", b"zzz"))  # same size, different text
    poisoned_check = prepare_corpus(source="text", path=text, tokenizer="bpe", vocab_size=280, cache_dir=cache)
    assert "damaged" in capsys.readouterr().err
    assert (split / "train.txt").read_bytes() == clean
    reference = prepare_corpus(source="text", path=text, tokenizer="bpe", vocab_size=280, cache_dir=tmp_path / "c2")
    assert poisoned_check.tokenizer.merges == reference.tokenizer.merges
    assert not any(b"zzz" in token for token in poisoned_check.tokenizer.vocab.values())


# 7. pre-encoded tokens are checked before training ---------------------------------------------------------------
def token_file_config(tmp_path: Path, ids: np.ndarray, meta: dict) -> Path:
    folder = tmp_path / "encoded"
    folder.mkdir(exist_ok=True)
    ids.astype(np.uint16).tofile(folder / "tokens.bin")
    (folder / "meta.json").write_text(json.dumps({"tokens_file": "tokens.bin", "dtype": "uint16", **meta}))
    path = tiny_config(tmp_path)
    config = json.loads(path.read_text())
    config["data"]["path"] = str(folder / "tokens.bin")
    path.write_text(json.dumps(config))
    return path


def test_a_truncated_token_file_exits_2_before_training(tmp_path, capsys):
    ids = np.tile(np.arange(40), 30)
    config = token_file_config(tmp_path, ids[:1000], {"num_tokens": len(ids), "vocab_size": 40})
    assert main(run_args(config, tmp_path / "runs")) == 2
    err = capsys.readouterr().err.strip()
    assert "holds 1000 uint16 tokens but its meta.json records 1200" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_a_token_id_outside_the_vocabulary_exits_2_before_training(tmp_path, capsys):
    ids = np.tile(np.arange(40), 30)
    ids[77] = 500
    config = token_file_config(tmp_path, ids, {"num_tokens": len(ids), "vocab_size": 40})
    assert main(run_args(config, tmp_path / "runs")) == 2
    err = capsys.readouterr().err.strip()
    assert "token id 500 (at index 77)" in err and "40 ids" in err and "\n" not in err


# 8. outputs are checked before the work --------------------------------------------------------------------------
def test_tokenizer_train_cli_refuses_an_unusable_out_before_training(tmp_path, capsys, monkeypatch):
    import cs336_basics.tokenizer.train as train_cli

    monkeypatch.setattr(train_cli, "train_bpe", lambda *a, **k: pytest.fail("trained before checking --out"))
    text = text_corpus(tmp_path / "corpus.txt")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, unwritable_dir(tmp_path)):
        assert train_cli.main(["--input", str(text), "--vocab-size", "300", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --out") and str(out) in err and "\n" not in err


def test_encode_file_cli_refuses_an_unusable_out_before_encoding(tmp_path, capsys):
    import cs336_basics.tokenizer.encode_file as encode_cli
    import cs336_basics.tokenizer.train as train_cli

    text = text_corpus(tmp_path / "corpus.txt")
    assert (
        train_cli.main(["--input", str(text), "--vocab-size", "270", "--out", str(tmp_path / "tok"), "--no-progress"])
        == 0
    )
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, unwritable_dir(tmp_path)):
        args = ["--vocab", str(tmp_path / "tok" / "vocab.json"), "--merges", str(tmp_path / "tok" / "merges.txt"),
                "--input", str(text), "--out", str(out), "--no-progress"]  # fmt: skip
        assert encode_cli.main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: output directory") and "\n" not in err
    assert not list(tmp_path.rglob("tokens.bin*"))


def test_runner_checks_runs_and_cache_directories_before_preparing_data(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(runner, "prepare_data", lambda *a, **k: pytest.fail("prepared data before checking dirs"))
    a_file = tmp_path / "file"
    a_file.write_text("x")
    config = tiny_config(tmp_path)
    assert main(run_args(config, a_file)) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: --runs-dir {a_file} is a file")
    text_cfg = text_config(tmp_path, text_corpus(tmp_path / "corpus.txt"), cache_dir=str(unwritable_dir(tmp_path)))
    assert main(run_args(text_cfg, tmp_path / "runs")) == 2
    assert "data.cache_dir" in capsys.readouterr().err


# 9. tolerant metrics, atomic writes ------------------------------------------------------------------------------
def test_damaged_metrics_lines_are_kept_aside_with_a_notice_on_resume(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=4, checkpoint_every=2, eval_every=4)
    runs = tmp_path / "runs"
    assert main(run_args(config, runs)) == 0
    metrics = runs / "r" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "{garbage", *lines[1:], '{"kind": "train", "st']))
    capsys.readouterr()
    assert main(run_args(config, runs, "r", "--resume", "--set", "train.max_steps=6")) == 0
    assert "2 damaged line(s) (line 2, " in capsys.readouterr().err
    aside = [json.loads(x) for x in (runs / "r" / "metrics.damaged.jsonl").read_text().splitlines()]
    assert [a["text"] for a in aside] == ["{garbage", '{"kind": "train", "st']
    records = [json.loads(x) for x in metrics.read_text().splitlines()]  # every line parses
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6]


def test_an_interrupted_summary_write_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text('{"steps": 2}\n')

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        atomic_write_text(path, '{"steps": 4, "much": "more"}\n')
    assert path.read_text() == '{"steps": 2}\n' and os.listdir(tmp_path) == ["summary.json"]


# 10. user errors are one line ------------------------------------------------------------------------------------
def test_a_latin1_or_empty_text_source_is_one_line_and_exit_2(tmp_path, capsys):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café au lait, crème brûlée\n\n".encode("latin-1") * 50)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for source, expected in ((latin, "is not UTF-8 text"), (empty, "split is empty")):
        config = text_config(tmp_path, source)
        assert main(run_args(config, tmp_path / "runs", source.stem)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("config error: data:") and expected in err and "\n" not in err, err


def test_a_full_disk_while_checkpointing_exits_1_with_one_line_and_keeps_the_last_checkpoint(
    tmp_path, capsys, monkeypatch
):
    config = tiny_config(tmp_path, max_steps=6, checkpoint_every=2, eval_every=6)
    save, calls = torch.save, []

    def save_until_the_disk_fills(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_fills)
    assert main(run_args(config, tmp_path / "runs")) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on the device") and "\n" not in err
    names = sorted(p.name for p in (tmp_path / "runs" / "r" / "checkpoints").iterdir())
    assert names == ["step_0000002.pt"]


def test_tokenizer_clis_turn_bad_text_and_a_full_disk_into_one_line(tmp_path, capsys, monkeypatch):
    import cs336_basics.tokenizer.train as train_cli

    latin = tmp_path / "latin.txt"
    latin.write_bytes("café crème\n".encode("latin-1") * 20)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    for source, expected in ((latin, "not valid UTF-8"), (empty, "is empty")):
        out = tmp_path / f"tok_{source.stem}"
        assert train_cli.main(["--input", str(source), "--vocab-size", "300", "--out", str(out), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and expected in err and "\n" not in err, err

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "tok" / "vocab.json"))

    monkeypatch.setattr(train_cli, "save_tokenizer_files", disk_full)
    text = text_corpus(tmp_path / "corpus.txt")
    assert (
        train_cli.main(["--input", str(text), "--vocab-size", "270", "--out", str(tmp_path / "tok"), "--no-progress"])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no space left on the device writing") and "\n" not in err


# 11. divergence advice that can be followed ----------------------------------------------------------------------
def follow_divergence_advice(args: list[str], capsys, marker: str) -> list[int]:
    """Run, and while it diverges, run the command its last line prints after ``marker``; the exit codes."""
    codes = [main(args)]
    while codes[-1] == 3 and len(codes) < 5:
        line = last_line(capsys.readouterr().err)
        assert marker in line, line
        codes.append(main(followed(line.split(marker)[1])))
    return codes


def test_divergence_after_a_sparse_checkpoint_prints_a_resume_command_that_works_and_is_recorded(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=20, checkpoint_every=5, eval_every=20)
    runs = tmp_path / "runs"
    args = run_args(config, runs, "r", "--set", "optim.lr=100", "--set", "optim.grad_clip=0",
                    "--set", "optim.warmup_steps=0")  # fmt: skip
    codes = follow_divergence_advice(args, capsys, "with a 10x lower learning rate: ")
    assert codes[0] == 3 and codes[-1] == 0, codes
    changes = json.loads((runs / "r" / "config_changes.json").read_text())
    assert [c["key"] for c in changes] == ["optim.lr"] * (len(codes) - 1)
    assert changes[0]["change"] == "100.0 -> 10.0"
    assert json.loads((runs / "r" / "summary.json").read_text())["steps"] == 20


def test_divergence_right_after_a_checkpoint_advises_a_fresh_run_that_works(tmp_path, capsys):
    # The checkpoint of the step before the failure holds the weights that failed: a new lr cannot change that.
    config = tiny_config(tmp_path, max_steps=20, checkpoint_every=1, eval_every=20)
    runs = tmp_path / "runs"
    args = run_args(config, runs, "r", "--set", "optim.lr=100", "--set", "optim.grad_clip=0",
                    "--set", "optim.warmup_steps=0")  # fmt: skip
    codes = follow_divergence_advice(args, capsys, "start again with a 10x lower learning rate: ")
    assert codes[0] == 3 and codes[-1] == 0, codes
    finished = [p.parent.name for p in runs.glob("*/summary.json")]
    assert finished == [f"r-lr{100 / 10 ** (len(codes) - 1):g}"]


def test_an_lr_change_without_the_flag_is_refused_and_the_flag_is_named(tmp_path, capsys):
    config = tiny_config(tmp_path, max_steps=2, eval_every=2, checkpoint_every=2)
    runs = tmp_path / "runs"
    assert main(run_args(config, runs)) == 0
    capsys.readouterr()
    assert main(run_args(config, runs, "r", "--resume", "--set", "optim.lr=0.001")) == 2
    assert "--allow-change optim.lr=VALUE" in capsys.readouterr().err
    assert main(run_args(config, runs, "r", "--resume", "--allow-change", "model.d_model=32")) == 2
    assert "only optimizer settings may change" in capsys.readouterr().err


# 12. no checkpoint loading runs code -----------------------------------------------------------------------------
def unsafe_torch_loads(source: str) -> list[int]:
    """Line numbers of ``torch.load(...)`` calls that do not pass ``weights_only=True`` literally."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            if not (isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                continue
            safe = any(
                k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                for k in node.keywords
            )
            if not safe:
                lines.append(node.lineno)
    return lines


def test_no_source_file_calls_torch_load_without_weights_only_true():
    assert unsafe_torch_loads("import torch\ntorch.load(p)\ntorch.load(p, weights_only=False)\n") == [2, 3]
    assert unsafe_torch_loads("torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)\n") == []
    skip = {".venv", ".git", "node_modules", "shared"}
    files = [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]
    assert len(files) > 50
    offenders = {str(p.relative_to(ROOT)): unsafe_torch_loads(p.read_text()) for p in files}
    assert {k: v for k, v in offenders.items() if v} == {}


# 13. BPE training that falls short of the vocabulary size --------------------------------------------------------
def test_bpe_training_says_which_vocab_size_it_reached_when_the_corpus_runs_out(tmp_path, capsys):
    import cs336_basics.tokenizer.train as train_cli

    text = tmp_path / "tiny.txt"
    text.write_text("ab ab ab")
    out = tmp_path / "tok"
    assert train_cli.main(["--input", str(text), "--vocab-size", "1000", "--out", str(out), "--no-progress"]) == 0
    reached = len(json.loads((out / "vocab.json").read_text()))
    assert reached < 1000
    assert f"reached a vocabulary of {reached} tokens, not the requested 1000" in capsys.readouterr().out


def test_train_bpe_warns_with_the_size_reached_and_says_nothing_when_it_is_reached(tmp_path):
    import warnings

    from cs336_basics.tokenizer.bpe_train import VocabShortfallWarning, train_bpe

    text = tmp_path / "tiny.txt"
    text.write_text("ab ab ab")
    with pytest.warns(VocabShortfallWarning, match="reached a vocabulary of 258 tokens, not the requested 1000"):
        vocab, _ = train_bpe(text, 1000, [])
    assert len(vocab) == 258  # 256 bytes + "ab" + " ab": nothing else to merge
    with warnings.catch_warnings():
        warnings.simplefilter("error", VocabShortfallWarning)
        assert len(train_bpe(text, 258, [])[0]) == 258
