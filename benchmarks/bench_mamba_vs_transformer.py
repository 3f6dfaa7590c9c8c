"""Training-step cost of Mamba vs Transformer (naive and torch_sdpa attention) as the sequence grows, on CPU.

The claim under test: a Mamba LM's time and memory per token stay flat as the context length L grows, while
attention's grow with L (its score matrix is L x L). Models are matched on non-embedding parameters (Mamba layers
have ~half a Transformer layer's parameters, so Mamba gets twice the layers, as in the Mamba paper).

Method
- One training step = forward + cross-entropy + backward + AdamW (``cs336_basics.optim.adamw``), batch 1 (``--batch``).
- Each (model, L) runs in a fresh subprocess, so that peaks are not hidden by an earlier run's allocator cache.
  Time: one warm-up step, then the median of ``--steps`` steps (wall clock). Runs are interleaved by L so load from
  other jobs on the machine hits every model alike.
- Peak memory: ``ru_maxrss`` (the process's peak resident set, which does see PyTorch's CPU allocations, unlike
  ``tracemalloc``) minus the resident set measured just before the first step (model and data already built):
  activations, gradients, optimizer state and allocator overhead of training.

    uv run python benchmarks/bench_mamba_vs_transformer.py                        # L = 256 .. 4096
    uv run python benchmarks/bench_mamba_vs_transformer.py --lengths 256 512 --steps 2
    uv run python benchmarks/bench_mamba_vs_transformer.py --decode          # per-token decoding latency only

With ``--write`` it writes ``benchmarks/results/mamba.md`` (table) and ``benchmarks/results/mamba_vs_transformer.png``
(plot); with ``--decode`` ``benchmarks/results/mamba_decode.md``: the time to generate one token after a prefix of L
tokens (Mamba: recurrent state, O(1) per token; Transformer: KV cache, attention over L keys per token).
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
import time
from pathlib import Path

import psutil
import torch

from cs336_basics.models.base import count_parameters, parameter_groups
from cs336_basics.models.factory import hybrid_lm, mamba_lm, transformer_lm
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.optim.adamw import AdamW

RESULTS = Path(__file__).parent / "results"
MODELS = ("mamba", "mamba-ckpt", "transformer-naive", "transformer-sdpa", "hybrid-AMAM")
DECODE_MODELS = ("mamba", "transformer-naive", "transformer-sdpa")  # checkpointing changes nothing without grad
VOCAB, D_MODEL, T_LAYERS, HEADS = 512, 128, 4, 4


def build(name: str, context_length: int) -> torch.nn.Module:
    """d_model 128: Transformer 4 layers (SwiGLU d_ff 384); Mamba 8 layers (expand 2, n 16); -ckpt recomputes scans;
    hybrid-AMAM: attention (fused SDPA) and Mamba layers alternating, each with its SwiGLU FFN (d_ff 384)."""
    if name == "hybrid-AMAM":
        return hybrid_lm(
            VOCAB, context_length, D_MODEL, HEADS, 384, d_state=16, pattern="AMAM", attn_backend="torch_sdpa"
        )
    if name in ("mamba", "mamba-ckpt"):
        ckpt = name == "mamba-ckpt"
        return mamba_lm(VOCAB, D_MODEL, 2 * T_LAYERS, d_state=16, d_conv=4, expand=2, checkpoint_scan=ckpt)
    backend = {"transformer-naive": "naive", "transformer-sdpa": "torch_sdpa"}[name]
    return transformer_lm(VOCAB, context_length, D_MODEL, T_LAYERS, HEADS, attn_backend=backend)


def worker(name: str, length: int, batch: int, steps: int, threads: int) -> dict:
    """Time ``steps`` training steps of one model at one length; runs inside its own process."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name, length)
    optimizer = AdamW(parameter_groups(model, 0.1), lr=1e-3)
    ids = torch.randint(0, VOCAB, (batch, length + 1))
    rss_before = psutil.Process().memory_info().rss
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    step = statistics.median(times[1:])
    return {
        "model": name,
        "L": length,
        "params": count_parameters(model)["non_embedding"],
        "step_s": step,
        "us_per_token": step / (batch * length) * 1e6,
        "tokens_per_s": batch * length / step,
        "peak_mib": max(peak - rss_before, 0) / 2**20,
    }


@torch.no_grad()
def decode_worker(name: str, length: int, tokens: int, threads: int) -> dict:
    """Prefill ``length`` tokens into the model's cache, then time ``tokens`` single-token steps (median)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name, length + tokens).eval()
    cache = model.make_cache(1, length + tokens)
    model(torch.randint(0, VOCAB, (1, length)), cache=cache)
    times = []
    for _ in range(tokens):
        next_id = torch.randint(0, VOCAB, (1, 1))
        start = time.perf_counter()
        model(next_id, cache=cache)
        times.append(time.perf_counter() - start)
    return {"model": name, "L": length, "ms_per_token": statistics.median(times) * 1e3}


def run_one(name: str, length: int, args: argparse.Namespace) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", name, str(length), "--batch", str(args.batch)]
    cmd += ["--steps", str(args.steps), "--threads", str(args.threads)] + (["--decode"] if args.decode else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        print(f"{name} L={length} failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def git_revision() -> str:
    """Short hash of the checked-out commit (``+dirty`` if the tree has changes), or ``unknown`` outside git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def write_results(rows: list[dict], args: argparse.Namespace, command: str) -> None:
    by = {(r["model"], r["L"]): r for r in rows}
    lengths = sorted({r["L"] for r in rows})
    params = {r["model"]: r["params"] for r in rows}
    lines = [
        "# Mamba vs Transformer: training-step cost vs sequence length (CPU)",
        "",
        f"Command: `{command}` (code at {git_revision()})  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()}-core CPU "
        f"({platform.machine()}) shared with other jobs, torch {torch.__version__}, "
        f"{args.threads} intra-op thread(s), batch {args.batch}, median of {args.steps} steps after 1 warm-up.  ",
        "Step = forward + cross-entropy + backward + AdamW. Peak memory = ru_maxrss - RSS before the first step "
        "(fresh process per cell).  ",
        "Non-embedding parameters: " + ", ".join(f"{m} {p / 1e6:.2f}M" for m, p in params.items()) + ".  ",
        "Mamba runs the CPU default scan backend (`chunked`, pure PyTorch), whose autograd keeps (d_inner, d_state) "
        "values per token and layer: its memory is linear in L but with a large constant.",
        "",
        "| L | model | step (s) | us / token | tokens / s | peak train memory (MiB) | step time vs Mamba |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for length in lengths:
        base = by.get(("mamba", length))
        for name in MODELS:
            r = by.get((name, length))
            if r is None:
                lines.append(f"| {length} | {name} | failed / skipped | | | | |")
                continue
            ratio = f"{r['step_s'] / base['step_s']:.2f}x" if base else "-"
            lines.append(
                f"| {length} | {name} | {r['step_s']:.3f} | {r['us_per_token']:.1f} | {r['tokens_per_s']:.0f} | "
                f"{r['peak_mib']:.0f} | {ratio} |"
            )
    first, last = lengths[0], lengths[-1]
    lines += ["", f"Growth of time per token from L={first} to L={last} (1.00x = flat):", ""]
    for name in MODELS:
        a, b = by.get((name, first)), by.get((name, last))
        if a and b:
            lines.append(f"- {name}: {b['us_per_token'] / a['us_per_token']:.2f}x")
    print("\n".join(lines))
    if not args.write:
        print("(not written: pass --write to update benchmarks/results/mamba.md and mamba_vs_transformer.png)")
        return
    (RESULTS / "mamba.md").write_text("\n".join(lines) + "\n")
    plot(rows, lengths)


def write_decode_results(rows: list[dict], args: argparse.Namespace, command: str) -> None:
    by = {(r["model"], r["L"]): r for r in rows}
    lengths = sorted({r["L"] for r in rows})
    lines = [
        "# Decoding latency per token after a prefix of L tokens (CPU)",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: {os.cpu_count()}-core CPU "
        f"({platform.machine()}) "
        f"shared with other jobs, {args.threads} intra-op thread(s), batch 1, median of {args.steps} new tokens.  ",
        "At this model size a decoding step is ~100 small kernels whose fixed overhead outweighs attending over L "
        "cached keys, so differences below ~2x are load noise, not an L trend.",
        "",
        "| L | " + " | ".join(f"{m} (ms / token)" for m in DECODE_MODELS) + " | transformer-sdpa / mamba |",
        "| --- | " + " | ".join("---" for _ in DECODE_MODELS) + " | --- |",
    ]
    for length in lengths:
        cells = [by.get((m, length)) for m in DECODE_MODELS]
        ratio = f"{cells[2]['ms_per_token'] / cells[0]['ms_per_token']:.2f}x" if cells[0] and cells[2] else "-"
        lines.append(
            f"| {length} | " + " | ".join(f"{c['ms_per_token']:.2f}" if c else "-" for c in cells) + f" | {ratio} |"
        )
    print("\n".join(lines))
    if not args.write:
        print("(not written: pass --write to update benchmarks/results/mamba_decode.md)")
        return
    (RESULTS / "mamba_decode.md").write_text("\n".join(lines) + "\n")


def plot(rows: list[dict], lengths: list[int]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in MODELS:
        mine = sorted((r for r in rows if r["model"] == name), key=lambda r: r["L"])
        if mine:
            axes[0].plot([r["L"] for r in mine], [r["us_per_token"] for r in mine], marker="o", label=name)
            axes[1].plot([r["L"] for r in mine], [r["peak_mib"] for r in mine], marker="o", label=name)
    for ax, ylabel in zip(axes, ["training time per token (us)", "peak training memory (MiB)"], strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(length) for length in lengths])
        ax.set_xlabel("sequence length L")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Mamba vs Transformer vs AMAM hybrid training step on CPU (batch 1, ~matched parameters)")
    fig.tight_layout()
    fig.savefig(RESULTS / "mamba_vs_transformer.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_mamba_vs_transformer.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096], help="sequence lengths to time"
    )
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS, help="models to time (all)")
    parser.add_argument("--batch", type=int, default=1, help="sequences per step (default 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per cell (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--timeout", type=float, default=900, help="seconds before a cell is given up")
    parser.add_argument("--decode", action="store_true", help="time single-token decoding instead of training")
    parser.add_argument("--write", action="store_true", help="write the tables/plot to benchmarks/results/")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "L"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, length = args.worker[0], int(args.worker[1])
        if args.decode:
            print(json.dumps(decode_worker(name, length, args.steps, args.threads)))
        else:
            print(json.dumps(worker(name, length, args.batch, args.steps, args.threads)))
        return
    command = "uv run python benchmarks/bench_mamba_vs_transformer.py " + " ".join(sys.argv[1:])
    rows = []
    for length in args.lengths:
        for name in args.models:
            if args.decode and name not in DECODE_MODELS:
                continue
            row = run_one(name, length, args)
            if row is not None:
                rows.append(row)
                print(f"L={length:5d} {name:18s} " + json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (write_decode_results if args.decode else write_results)(rows, args, command.strip())


if __name__ == "__main__":
    main()
