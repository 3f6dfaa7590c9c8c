"""Training-step time with the output layer on the answer positions only vs on every position (MQAR, vocab 8192).

    uv run python benchmarks/bench_scored_head.py --steps 10 [--write]

Builds the model of ``configs/mqar_zoology.json`` (2 layers, width 64, vocabulary 8192 as shipped) and times forward +
backward of one batch of 64 sequences, once with ``score_mask`` (the LM head on the 4 answers per sequence, what the
trainer does for synthetic tasks) and once with the full logits; prints both and their ratio. One thread by default,
so the figure does not depend on what else the machine runs. ``--write`` updates ``benchmarks/results/scored_head.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
import warnings
from pathlib import Path

import torch

CONFIG = Path(__file__).resolve().parents[1] / "assignment_experiments" / "configs" / "mqar_zoology.json"
RESULTS_DIR = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_scored_head.py", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/results/scored_head.md")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from assignment_experiments.config import load_config
    from assignment_experiments.run_loading import build_run_model
    from cs336_basics.data.synthetic import make_task
    from cs336_basics.training.evaluation import batch_loss

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(CONFIG)
    model = build_run_model(config, config.data.task_options["vocab_size"])
    task = make_task("mqar", **config.data.task_options)
    inputs, targets, mask = task.sample_batch(64, torch.Generator().manual_seed(0))

    def step(subset: bool) -> None:
        logits = model(inputs, score_mask=mask) if subset else model(inputs)
        batch_loss(logits, targets, mask)[0].backward()
        model.zero_grad(set_to_none=True)

    timings = {}
    for subset in (True, False):
        step(subset)  # warm-up
        started = time.perf_counter()
        for _ in range(args.steps):
            step(subset)
        timings[subset] = (time.perf_counter() - started) / args.steps
    tokens = inputs.numel()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        "# Output layer on the answer positions only vs on every position (MQAR training step)",
        "",
        f"Command: `uv run python benchmarks/bench_scored_head.py --steps {args.steps} --threads {args.threads}`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()}-core CPU "
        f"({platform.machine()}), load average {load:.1f} at the end; torch {torch.__version__}, {args.threads} "
        f"thread(s).  ",
        f"Model and task: `configs/mqar_zoology.json` ({len(model.layers)} layers, width {config.model.d_model}, "
        "vocabulary "
        f"{config.data.task_options['vocab_size']}), one batch of {inputs.shape[0]} x {inputs.shape[1]} tokens, forward"
        f" + backward, mean of {args.steps} steps after one warm-up step. The losses are equal "
        "(`tests/test_scored_positions.py`).",
        "",
        "| output layer on | ms / step | tokens / s |",
        "| --- | --- | --- |",
    ]
    for subset, label in ((True, "the answer positions only"), (False, "every position")):
        lines.append(f"| {label} | {timings[subset] * 1e3:.1f} | {tokens / timings[subset]:,.0f} |")
    lines += ["", f"Speed-up: **{timings[False] / timings[True]:.1f}x**."]
    print("\n".join(lines))
    if not args.write:
        print("(not written: pass --write to update benchmarks/results/scored_head.md)")
        return
    (RESULTS_DIR / "scored_head.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
