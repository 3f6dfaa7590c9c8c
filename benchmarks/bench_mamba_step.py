"""A Mamba LM training step on CPU at long context: time and peak memory, this tree against an earlier revision.

What a user of the CPU scan feels: one training step (forward + cross-entropy + backward + AdamW) of the Mamba LM
from ``benchmarks/bench_mamba_vs_transformer.py`` (vocab 512, d_model 128, 8 layers, d_state 16, expand 2; built with
``cs336_basics.models.factory.build_model``), batch 1, at each ``--lengths`` L.

- Every (tree, L) cell runs in a fresh subprocess, so peaks are not hidden by an earlier run's allocations.
  Time: one warm-up step, then the median of ``--steps`` steps (wall clock; ``--clock thread`` uses the worker's CPU
  time instead, less sensitive to other jobs). Peak memory: ``ru_maxrss`` minus the resident set just before the
  first step (model and batch already built): activations, gradients, optimizer state, scratch and allocator slack.
- ``--baseline REV`` also runs the same worker on ``git archive REV`` of this repository (unpacked into a temporary
  directory and put first on ``PYTHONPATH``), interleaved with this tree by L, and reports the ratios: the
  before/after comparison in one run.

    uv run python benchmarks/bench_mamba_step.py --baseline 502afe5            # L 1024 and 4096
    uv run python benchmarks/bench_mamba_step.py --lengths 1024 --steps 2       # this tree only

``--write`` rewrites ``benchmarks/results/mamba_step.md``; without it nothing on disk changes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "mamba_step.md"
VOCAB = 512
MODEL = {"vocab_size": VOCAB, "d_model": 128, "num_layers": 8, "d_state": 16, "d_conv": 4, "expand": 2}


def worker(length: int, steps: int, threads: int, clock: str) -> dict:
    """Time ``steps`` training steps at one length; runs inside its own process (whose tree is on sys.path)."""
    import psutil
    import torch

    from cs336_basics.models.base import parameter_groups
    from cs336_basics.models.factory import build_model
    from cs336_basics.nn.functional import cross_entropy
    from cs336_basics.optim.adamw import AdamW

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_model("mamba", **MODEL)
    optimizer = AdamW(parameter_groups(model, 0.1), lr=1e-3)
    ids = torch.randint(0, VOCAB, (1, length + 1))
    timer = time.thread_time if clock == "thread" else time.perf_counter
    rss_before = psutil.Process().memory_info().rss
    times = []
    for _ in range(steps + 1):
        start = timer()
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(timer() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"L": length, "step_s": statistics.median(times[1:]), "peak_mib": max(peak - rss_before, 0) / 2**20}


def run_cell(tree: Path | None, length: int, args: argparse.Namespace) -> dict:
    env = dict(os.environ)
    if tree is not None:  # the baseline's packages shadow this tree's (PYTHONPATH precedes the editable install)
        env["PYTHONPATH"] = os.pathsep.join([str(tree), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(length), "--steps", str(args.steps)]
    cmd += ["--threads", str(args.threads), "--clock", args.clock]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree or ROOT, timeout=args.timeout)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"worker at L={length} ({'baseline' if tree else 'this tree'}) failed: {tail[0]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def unpack_revision(rev: str, into: Path) -> str:
    """``git archive rev`` of this repository into ``into``; returns the revision's short hash."""
    try:
        short = subprocess.run(
            ["git", "rev-parse", "--short", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        archive = subprocess.run(["git", "archive", "--format=tar", short], cwd=ROOT, capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        sys.stderr.write(f"bench_mamba_step: cannot read revision {rev!r} from git; pass a commit of this repo\n")
        sys.exit(2)
    archive_path = into / "tree.tar"
    archive_path.write_bytes(archive.stdout)
    with tarfile.open(archive_path) as tar:
        tar.extractall(into / "tree", filter="data")
    return short


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_mamba_step.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[1024, 4096], help="sequence lengths (default: 1024 4096)"
    )
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell, after one warm-up step")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads in each worker")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall", help="wall or the worker's CPU time")
    parser.add_argument("--baseline", metavar="REV", help="git revision to compare against in the same run")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per worker process")
    parser.add_argument("--write", action="store_true", help=f"rewrite benchmarks/results/{RESULTS.name}")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker, args.steps, args.threads, args.clock)))
        return
    if args.steps < 1 or min(args.lengths) < 1:
        sys.stderr.write("bench_mamba_step: --steps and every --lengths value must be >= 1\n")
        sys.exit(2)
    with tempfile.TemporaryDirectory() as tmp:
        base_rev = unpack_revision(args.baseline, Path(tmp)) if args.baseline else None
        trees = [("this tree", None)] + ([(f"baseline {base_rev}", Path(tmp) / "tree")] if base_rev else [])
        head = "| L | tree | step (s) | tokens / s | peak train memory (MiB) |"
        if base_rev:
            head += " time vs baseline | memory vs baseline |"
        print(head, flush=True)
        rows = []
        for length in args.lengths:
            cells = {label: run_cell(tree, length, args) for label, tree in trees}
            base = cells.get(f"baseline {base_rev}")
            for label, r in cells.items():
                row = f"| {length} | {label} | {r['step_s']:.3f} | {length / r['step_s']:.0f} | {r['peak_mib']:.0f} |"
                if base:
                    row += f" {r['step_s'] / base['step_s']:.2f}x | {r['peak_mib'] / max(base['peak_mib'], 1):.2f}x |"
                print(row, flush=True)
                rows.append(row)
    if args.write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        command = "uv run python benchmarks/bench_mamba_step.py " + " ".join(sys.argv[1:])
        lines = [
            "# Mamba LM training step on CPU: time and peak memory at long context",
            "",
            f"Command: `{command}`  ",
            f"Date: {stamp}; machine: 2-core CPU ({platform.machine()}) shared with other jobs; {args.threads} "
            f"thread(s), batch 1, {args.clock} clock, median of {args.steps} steps after 1 warm-up; a fresh "
            "process per cell. Model: vocab 512, d_model 128, 8 Mamba layers, d_state 16, expand 2, CPU scan "
            "backend `chunked`. Peak memory = ru_maxrss - RSS before the first step.",
            "",
            head,
            "|" + "---|" * (head.count("|") - 1),
            *rows,
            "",
        ]
        RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
