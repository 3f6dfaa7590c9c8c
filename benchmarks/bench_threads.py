"""Training throughput of the quickstart model at torch's default thread count vs other thread counts, same run.

    uv run python benchmarks/bench_threads.py                      # default threads vs 1, prints the table
    uv run python benchmarks/bench_threads.py --threads 1 2 4 --write   # also writes benchmarks/results/threads.md

Each setting trains the quickstart Transformer (4 layers, d_model 128, context 128, batch 16, vocabulary 1024, our
AdamW) on random tokens; the settings alternate in ``--rounds`` rounds of ``--steps`` steps, so a change in the
machine's load hits all of them alike. Tokens/s is wall-clock (what a user waits for); the 1-minute load average is
recorded beside each figure, since on a shared machine it decides the outcome: torch's default uses one thread per
core and its threads spin-wait for each other, so when other processes hold the cores every parallel op waits for
the slowest thread. The ratio column is each setting's tokens/s over the default's.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from cs336_basics.models.base import parameter_groups
from cs336_basics.models.factory import build_model
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.optim.adamw import AdamW

RESULTS = Path(__file__).parent / "results" / "threads.md"


def train_steps(model, optimizer, steps: int, batch: int, context: int, vocab: int) -> float:
    """Wall-clock tokens/s over ``steps`` training steps on random tokens."""
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for _ in range(steps):
        ids = torch.randint(0, vocab, (batch, context + 1), generator=generator)
        loss = cross_entropy(model(ids[:, :-1]).reshape(-1, vocab), ids[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return steps * batch * context / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_threads.py", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1], help="thread counts to compare with the default (default: 1)"
    )
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per setting and round (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3; the median is reported)")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step (default 16, as the quickstart)")
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/results/threads.md")
    parser.add_argument("--note", default="", help="a line about the machine's other load, written with the table")
    args = parser.parse_args(argv)

    default = torch.get_num_threads()
    settings = [default] + [t for t in args.threads if t != default]
    vocab, context = 1024, 128
    torch.manual_seed(0)
    model = build_model("transformer", vocab_size=vocab, context_length=context, d_model=128, num_layers=4, num_heads=4)
    optimizer = AdamW(parameter_groups(model, 0.1), lr=1e-3)
    train_steps(model, optimizer, 1, args.batch, context, vocab)  # warm-up
    rates: dict[int, list[float]] = {t: [] for t in settings}
    loads: dict[int, list[float]] = {t: [] for t in settings}
    for round_index in range(args.rounds):
        for threads in settings:
            torch.set_num_threads(threads)
            before = os.getloadavg()[0]
            rate = train_steps(model, optimizer, args.steps, args.batch, context, vocab)
            rates[threads].append(rate)
            loads[threads].append((before + os.getloadavg()[0]) / 2)
            print(
                f"round {round_index + 1}: {threads} thread(s): {rate:,.0f} tok/s (load {loads[threads][-1]:.1f})",
                flush=True,
            )
    torch.set_num_threads(default)

    base = statistics.median(rates[default])
    lines = [
        f"# Threads: training tokens/s at torch's default ({default} threads) vs fewer",
        "",
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}. {args.note}".rstrip(),
        "",
        f"Command: `uv run python benchmarks/bench_threads.py --threads {' '.join(map(str, args.threads))} "
        f"--steps {args.steps} --rounds {args.rounds}`",
        "",
        "| threads | tokens/s (median) | all rounds | vs default | 1-min load average during |",
        "|---|---|---|---|---|",
    ]
    for threads in settings:
        label = f"{threads} (default)" if threads == default else str(threads)
        median = statistics.median(rates[threads])
        rounds = ", ".join(f"{r:,.0f}" for r in rates[threads])
        load = ", ".join(f"{x:.1f}" for x in loads[threads])
        lines.append(f"| {label} | {median:,.0f} | {rounds} | {median / base:.2f}x | {load} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(text)
        print(f"wrote {RESULTS}")
    else:
        print("(not written: pass --write to update benchmarks/results/threads.md)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
