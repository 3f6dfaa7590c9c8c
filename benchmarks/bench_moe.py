"""MoE benchmark: our dropless sorted/grouped dispatch against the dense "every expert on every token" peer.

The peer is what a simple MoE does: run all E experts on all N tokens and combine with a gate matrix that is zero
outside each token's top-k. It computes E/k times the FLOPs; the grouped dispatch only runs each expert on its own
tokens. Both give the same output (checked here before timing). Figures are medians of forward+backward calls,
the two timed in interleaved rounds. Run: ``uv run python benchmarks/bench_moe.py --write`` (writes
``benchmarks/results/moe.md``).
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

from cs336_basics.models.moe import MoEFeedForward

RESULTS_DIR = Path(__file__).parent / "results"


def dense_peer(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """All experts on all tokens, combined through a (N, E) gate matrix with zeros off the top-k."""
    flat = x.reshape(-1, x.shape[-1])
    _, top_idx, gates = moe.route(flat)
    gate_matrix = torch.zeros(flat.shape[0], moe.num_experts).scatter(1, top_idx, gates)  # (N, E)
    outs = torch.stack([expert(flat) for expert in moe.experts], dim=1)  # (N, E, d)
    return (gate_matrix.unsqueeze(-1) * outs).sum(1).reshape(x.shape)


def median_seconds(fns: dict, repeats: int) -> dict[str, float]:
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_moe.py", description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2048, help="tokens per call (batch x sequence)")
    parser.add_argument("--d-model", type=int, default=128, help="model width (default 128)")
    parser.add_argument("--d-ff", type=int, default=256, help="expert hidden width (default 256)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per variant, median reported (default 5)")
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/results/moe.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for experts, top_k in [(4, 1), (8, 2), (16, 1)]:
        moe = MoEFeedForward(args.d_model, experts, top_k, args.d_ff)
        x = torch.randn(args.tokens, args.d_model)
        torch.testing.assert_close(moe(x), dense_peer(moe, x), rtol=1e-4, atol=1e-5)
        fns = {
            "ours": lambda m=moe, x=x: m(x).sum().backward(),
            "peer": lambda m=moe, x=x: dense_peer(m, x).sum().backward(),
        }
        t = median_seconds(fns, args.repeats)
        rows.append((experts, top_k, t["ours"], t["peer"]))
        print(
            f"E={experts:2d} k={top_k}: grouped {t['ours'] * 1e3:8.1f} ms  dense {t['peer'] * 1e3:8.1f} ms  "
            f"ratio {t['ours'] / t['peer']:.2f}x"
        )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# MoE dispatch benchmark",
        "",
        f"Command: `uv run python benchmarks/bench_moe.py --tokens {args.tokens} --d-model {args.d_model} "
        f"--d-ff {args.d_ff} --repeats {args.repeats}`  ",
        f"Date: {now}; machine: {os.cpu_count()}-core CPU ({platform.machine()}), shared with other jobs; "
        f"torch {torch.__version__}. Median forward+backward time per call.",
        "",
        "| experts | top-k | grouped dropless (ours) | dense all-experts (peer) | ratio (ours/peer, lower is better) |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {e} | {k} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {a / b:.2f}x |" for e, k, a, b in rows]
    print("\n".join(lines))
    if not args.write:
        print("(not written: pass --write to update benchmarks/results/moe.md)")
        return
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "moe.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
