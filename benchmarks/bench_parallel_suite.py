"""Wall-clock of a grid of small MQAR runs: ``run_suite`` one run at a time vs ``run_suite --parallel N``, same machine.

    uv run python benchmarks/bench_parallel_suite.py                        # CPU: 4 runs, one at a time vs 2 at once
    uv run python benchmarks/bench_parallel_suite.py --device cuda --runs 16 --jobs 8 --write
    PYTHONPATH=. python benchmarks/bench_parallel_suite.py --device cuda ... # a GPU machine without uv

The grid is the Zoology-setting MQAR model of study 11 (``configs/mqar_zoology.json``: two layers, no MLP, width
``--width``, vocabulary 8192, 4 pairs in 64 tokens) at ``--runs`` seeds, ``--steps`` steps of ``--batch`` sequences,
no early stop and no checkpoints. Both ways run as a fresh ``run_suite`` process, so each pays what a user pays:
one interpreter and torch import for the sequential suite, one per run for the parallel one. On a CPU each way uses
the suite's default threads (``train.num_threads=0``: the free cores; ``--parallel`` divides them among its runs).
Prints seconds and runs per minute for each way and the ratio; ``--write`` also writes
``benchmarks/results/parallel_suite.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "parallel_suite.md"


def write_suite(folder: Path, args: argparse.Namespace) -> Path:
    overrides = {
        "model.d_model": args.width,
        "train.device": args.device,
        "train.batch_size": args.batch,
        "train.max_steps": args.steps,
        "train.eval_every": args.steps,
        "train.checkpoint_every": 0,
        "train.target_accuracy": None,
        "train.num_threads": 0,
        "optim.warmup_steps": min(100, args.steps // 4),
        "data.final_eval_max_tokens": 4096,
        "logging.log_every": args.steps,
    }
    runs = [{"name": f"seed{seed}", "set": {**overrides, "train.seed": seed}} for seed in range(args.runs)]
    base = ROOT / "assignment_experiments" / "configs" / "mqar_zoology.json"
    suite = folder / "grid.json"
    suite.write_text(json.dumps({"description": "parallel-suite benchmark", "base": str(base), "runs": runs}))
    return suite


def timed_suite(suite: Path, runs_dir: Path, jobs: int) -> float:
    command = [sys.executable, "-m", "assignment_experiments.run_suite", "--suite", str(suite)]
    command += ["--runs-dir", str(runs_dir), "--parallel", str(jobs), "--set", "logging.progress_bar=false"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"run_suite --parallel {jobs} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    finished = list(runs_dir.glob("*/summary.json"))
    if len(finished) != len(json.loads(suite.read_text())["runs"]):
        raise SystemExit(f"run_suite --parallel {jobs} finished {len(finished)} runs; see {runs_dir}")
    return seconds


def main() -> None:
    description = __doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_parallel_suite.py", description=description)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the runs train")
    parser.add_argument("--runs", type=int, default=4, help="runs in the grid (seeds)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once for --parallel")
    parser.add_argument("--steps", type=int, default=100, help="training steps per run")
    parser.add_argument("--batch", type=int, default=64, help="sequences per step")
    parser.add_argument("--width", type=int, default=64, help="d_model of the MQAR model")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        suite = write_suite(Path(tmp), args)
        sequential = timed_suite(suite, Path(tmp) / "sequential", 1)
        parallel = timed_suite(suite, Path(tmp) / "parallel", args.jobs)
    load_after = os.getloadavg()[0]
    import torch

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{platform.machine()}, {os.cpu_count()} cores"
    rows = [("one at a time", sequential), (f"--parallel {args.jobs}", parallel)]
    table = ["| way | seconds | runs per minute | vs one at a time |", "|---|---|---|---|"]
    table += [f"| {way} | {s:.1f} | {args.runs * 60 / s:.2f} | {sequential / s:.2f}x |" for way, s in rows]
    command = "uv run python benchmarks/bench_parallel_suite.py " + " ".join(sys.argv[1:])
    text = "\n".join(
        [
            f"# A grid of {args.runs} MQAR runs: run_suite one at a time vs --parallel {args.jobs}",
            "",
            f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {device}, torch {torch.__version__}; "
            f"1-min load average {load_before:.1f} before, {load_after:.1f} after.",
            "",
            f"Command: `{command.strip()}`",
            "",
            f"Each run: width {args.width}, {args.steps} steps of {args.batch} sequences (64 tokens), no early stop.",
            "",
            *table,
            "",
        ]
    )
    print(text)
    if args.write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
