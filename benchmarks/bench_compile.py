"""Eager vs ``torch.compile`` (inductor) training steps on CPU, for every architecture the runner builds.

The question: should a CPU user set ``train.compile=true``? For each model this builds two identical copies (same
seed), wraps one in ``torch.compile`` exactly as the runner does (the model only; loss and AdamW stay eager), and
times training steps (forward + cross-entropy + backward + AdamW) of both, interleaved so that load from other jobs
hits both alike. It reports tokens/s of each, their ratio, the compiled model's first-step time (compilation), and
the largest difference between the two models' losses over the timed steps (compiled code must train the same
model; float32 reassociation gives ~1e-6).

Models (``--models``): ``transformer`` = the quickstart config (d 128, 4 layers, ctx 128, vocab 1024, batch 16);
``mamba`` = ``mamba_cpu`` (d 128, 4 layers, d_state 16); ``hybrid`` = ``hybrid_cpu`` (pattern AMAM);
``hymba`` = ``hymba_cpu`` (4 layers, 8 meta tokens). Built with ``cs336_basics.models.factory.build_model``.

    uv run python benchmarks/bench_compile.py                               # all four, print only
    uv run python benchmarks/bench_compile.py --models transformer mamba --steps 10 --write

Inductor on CPU compiles C++ and needs a C compiler (``cc``/``g++``) on PATH; without one this script says so and
exits 2. ``--write`` rewrites ``benchmarks/results/compile.md``; without it nothing on disk changes.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from cs336_basics.models.base import parameter_groups
from cs336_basics.models.factory import build_model
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.optim.adamw import AdamW

RESULTS = Path(__file__).parent / "results" / "compile.md"
VOCAB, CONTEXT, BATCH = 1024, 128, 16
COMMON = {"vocab_size": VOCAB, "d_model": 128}
MODELS = {
    "transformer": ("transformer", {"context_length": CONTEXT, "num_layers": 4, "num_heads": 4, "d_ff": 384}),
    "mamba": ("mamba", {"num_layers": 4, "d_state": 16, "d_conv": 4, "expand": 2}),
    "hybrid": ("hybrid", {"context_length": CONTEXT, "num_heads": 4, "d_ff": 384, "d_state": 16, "pattern": "AMAM"}),
    "hymba": (
        "hymba",
        {"context_length": CONTEXT, "num_layers": 4, "num_heads": 4, "d_ff": 384, "d_state": 16, "num_meta_tokens": 8},
    ),
}


def make(name: str) -> torch.nn.Module:
    architecture, kwargs = MODELS[name]
    torch.manual_seed(0)
    return build_model(architecture, **COMMON, **kwargs)


def train_step(module: torch.nn.Module, optimizer: AdamW, ids: torch.Tensor) -> float:
    loss = cross_entropy(module(ids[:, :-1]), ids[:, 1:])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def measure(name: str, steps: int, batch: int, clock=time.perf_counter) -> dict:
    """Eager and compiled copies of one model, trained on the same batches, timed interleaved."""
    models = {"eager": make(name), "compiled": make(name)}
    runners = {"eager": models["eager"], "compiled": torch.compile(models["compiled"])}
    optimizers = {k: AdamW(parameter_groups(m, 0.1), lr=1e-3) for k, m in models.items()}
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, VOCAB, (batch, CONTEXT + 1), generator=g) for _ in range(steps + 2)]
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    first: dict[str, float] = {}
    for i, ids in enumerate(batches):
        for key in ("eager", "compiled"):
            start, wall_start = clock(), time.perf_counter()
            losses[key].append(train_step(runners[key], optimizers[key], ids))
            elapsed = clock() - start
            if i == 0:
                first[key] = time.perf_counter() - wall_start  # compilation runs partly in worker processes
            elif i >= 2:  # step 1 may still recompile (e.g. for the optimizer's first update); skip it too
                times[key].append(elapsed)
    eager, compiled = statistics.median(times["eager"]), statistics.median(times["compiled"])
    tokens = batch * CONTEXT
    return {
        "name": name,
        "eager_tps": tokens / eager,
        "compiled_tps": tokens / compiled,
        "speedup": eager / compiled,
        "compile_s": first["compiled"],
        "max_loss_diff": max(abs(a - b) for a, b in zip(losses["eager"], losses["compiled"], strict=True)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_compile.py", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=list(MODELS),
                        help="models to time (default: all)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=8, help="timed steps per model and mode (after 2 warm-up)")
    parser.add_argument("--batch", type=int, default=BATCH, help="sequences per step (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall", help="wall or this thread's CPU time")
    parser.add_argument("--write", action="store_true", help=f"rewrite benchmarks/results/{RESULTS.name}")
    args = parser.parse_args()
    if args.steps < 1:
        print(f"bench_compile: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        sys.exit(2)
    compiler = shutil.which("cc") or shutil.which("g++") or shutil.which("gcc")
    if compiler is None:
        sys.stderr.write("bench_compile: torch.compile on CPU needs a C compiler (cc or g++) on PATH; install one\n")
        sys.exit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    head = "| model | eager tok/s | compiled tok/s | compiled vs eager | first compiled step (s) | max loss diff |"
    print(head, flush=True)
    rows = []
    for name in args.models:
        r = measure(name, args.steps, args.batch, time.thread_time if args.clock == "thread" else time.perf_counter)
        row = (
            f"| {name} | {r['eager_tps']:.0f} | {r['compiled_tps']:.0f} | {r['speedup']:.2f}x | "
            f"{r['compile_s']:.1f} | {r['max_loss_diff']:.1e} |"
        )
        print(row, flush=True)
        rows.append(row)
    if args.write:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        models = " ".join(args.models)
        threads = f" --threads {args.threads}" if args.threads else ""
        command = (
            f"uv run python benchmarks/bench_compile.py --models {models} --steps {args.steps}{threads} "
            f"--clock {args.clock} --write"
        )
        text = [
            "# Eager vs torch.compile (inductor), training step on CPU",
            "",
            f"Command: `{command}`  ",
            f"Date: {stamp}; machine: 2-core CPU ({platform.machine()}) shared with other jobs, torch "
            f"{torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch}, context {CONTEXT}, "
            f"{args.clock} clock, median of {args.steps} steps after 2 warm-up steps, eager and compiled "
            "interleaved. First compiled step: wall time, compilation included.",
            "",
            head,
            "|" + "---|" * (head.count("|") - 1),
            *rows,
            "",
        ]
        RESULTS.write_text("\n".join(text))


if __name__ == "__main__":
    main()
