"""Hymba cross-layer KV sharing: parameters and KV-cache bytes with ``hymba.kv_sharing`` against the same model without.

Sharing follows Hymba-1.5B's groups (pairs of consecutive non-global layers; an odd run starts with a group of three):
each consumer layer drops its K and V projections and keeps no KV cache. Both models are built here from the same
spec (on the meta device: nothing is allocated) with paper fusion and schedule; the cache is what ``make_cache``
allocates (float32) for ``batch`` sequences of ``context + meta tokens`` positions. These are exact counts, not
timings. Run: ``uv run python benchmarks/bench_hymba_kv_sharing.py [--write]`` (``--write`` updates
``benchmarks/results/hymba_kv_sharing.md``).
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import torch

from cs336_basics.models.factory import hymba_lm

RESULTS_DIR = Path(__file__).parent / "results"


def cache_bytes(model: torch.nn.Module, batch: int) -> int:
    """Bytes of the keys and values ``make_cache`` allocates (the KV caches of the layers that keep one)."""
    states = model.make_cache(batch).layers
    kv = [s.own[0] for s in states if s.own[0] is not None]
    return sum(c.keys.numel() * c.keys.element_size() + c.values.numel() * c.values.element_size() for c in kv)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_hymba_kv_sharing.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--d-model", type=int, default=104, help="model width (default: %(default)s)")
    parser.add_argument("--context", type=int, default=128, help="tokens per sequence (default: %(default)s)")
    parser.add_argument("--meta", type=int, default=8, help="meta tokens (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=16, help="sequences the KV cache holds (default: %(default)s)")
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16, 32], help="model depths to count")
    parser.add_argument(
        "--write", action="store_true", help="write the table to benchmarks/results/hymba_kv_sharing.md"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for layers in args.layers:
        shape = dict(vocab_size=256, context_length=args.context, d_model=args.d_model, num_layers=layers, num_heads=4)
        shape |= dict(d_ff=312, d_state=16, num_meta_tokens=args.meta)
        with torch.device("meta"):
            models = {"plain": hymba_lm(**shape), "shared": hymba_lm(**shape, kv_sharing=True)}
        params = {n: sum(p.numel() for p in m.parameters()) for n, m in models.items()}
        cache = {n: cache_bytes(m, args.batch) for n, m in models.items()}
        consumers = [i for i, layer in enumerate(models["shared"].layers) if layer.shares_kv]
        rows.append((layers, consumers, params, cache))
    command = "uv run python benchmarks/bench_hymba_kv_sharing.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items()
        if k != "write"
    )
    lines = [
        "# Hymba cross-layer KV sharing: parameters and KV-cache memory",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; torch {torch.__version__}. Exact counts "
        f"(models built on the meta device). Shape: d_model {args.d_model}, 4 heads, expand 2 (attention width "
        f"{2 * args.d_model}), d_ff 312, d_state 16, vocab 256, {args.meta} meta tokens, context {args.context}, "
        f"paper fusion and schedule (global: first, middle, last layer); KV cache for batch {args.batch}, float32.",
        "",
        "| layers | consumer layers (no K/V, no cache) | parameters plain -> shared | KV cache plain -> shared "
        "| cache shared/plain |",
        "| --- | --- | --- | --- | --- |",
    ]
    for layers, consumers, params, cache in rows:
        lines.append(
            f"| {layers} | {', '.join(map(str, consumers)) or 'none'} | {params['plain']:,} -> {params['shared']:,} "
            f"({params['shared'] / params['plain'] - 1:+.1%}) | {cache['plain'] / 2**20:.2f} -> "
            f"{cache['shared'] / 2**20:.2f} MiB | {cache['shared'] / cache['plain']:.2f}x |"
        )
    print("\n".join(lines))
    if not args.write:
        print("(not written: pass --write to update benchmarks/results/hymba_kv_sharing.md)")
        return
    (RESULTS_DIR / "hymba_kv_sharing.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
