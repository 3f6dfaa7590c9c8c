"""Training-step throughput of our TransformerLM vs a torch-native peer, and attention cost vs sequence length.

Run from the repository root::

    uv run python benchmarks/bench_transformer.py            # full run, writes benchmarks/results/transformer.md
    uv run python benchmarks/bench_transformer.py --quick    # fewer steps, shorter sweep (smoke test)

1. Throughput. One training step = forward, cross-entropy, backward and an AdamW step. "ours" is
   ``TransformerLM`` (from-scratch layers, our cross-entropy, our ``AdamW``) with the naive or the ``torch_sdpa``
   attention backend; the peer is the same shape built from torch-native pieces (``nn.Linear``, ``nn.RMSNorm``,
   ``nn.Embedding``, ``F.scaled_dot_product_attention``, ``F.cross_entropy``, ``torch.optim.AdamW``). Both are
   timed in the same process, alternating, so machine load hits both alike. The ratio is peer time / our time
   (> 1 means we are faster).
2. Sequence-length sweep. One pre-norm block (d_model 256, 4 heads, batch 1), forward + backward, naive vs fused
   attention, seq_len 256 -> 4096: median step time, and the activation memory autograd saves for the backward
   pass (distinct tensor storages, including the weights the matmuls save; measured with saved-tensor hooks,
   deterministic, unlike RSS on a shared machine). It is the part of peak training memory that grows with
   seq_len: the naive path keeps the (T, T) attention probabilities per head, the fused kernel does not.
3. Decoding. Greedy ``generate`` with the KV cache (one new position per step) vs the same model with its cache
   hidden, so that every step recomputes the whole prefix.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cs336_basics.models.transformer import TransformerBlock, TransformerLM
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.optim.adamw import AdamW
from cs336_basics.training.generation import generate

RESULTS = Path(__file__).parent / "results" / "transformer.md"
DECODE_TOKENS = 128
CONFIGS = {
    "small": dict(vocab_size=10000, context_length=64, d_model=128, num_layers=4, num_heads=4, d_ff=None, batch=12),
    "tinystories": dict(
        vocab_size=10000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344, batch=4
    ),
}


class TorchBlock(nn.Module):
    """Pre-norm RoPE/SwiGLU block from torch-native layers (the peer)."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int, rope_cos: torch.Tensor, rope_sin: torch.Tensor):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.ln1, self.ln2 = nn.RMSNorm(d_model, eps=1e-5), nn.RMSNorm(d_model, eps=1e-5)
        self.w1 = nn.Linear(d_model, d_ff, bias=False)
        self.w3 = nn.Linear(d_model, d_ff, bias=False)
        self.w2 = nn.Linear(d_ff, d_model, bias=False)
        self.cos, self.sin = rope_cos, rope_sin

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[-2]
        cos, sin = self.cos[:T], self.sin[:T]  # (T, hd/2)
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
        y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
        x = x + self.out(y.transpose(1, 2).reshape(B, T, D))
        h = self.ln2(x)
        return x + self.w2(F.silu(self.w1(h)) * self.w3(h))


class TorchLM(nn.Module):
    def __init__(self, vocab_size, context_length, d_model, num_layers, num_heads, d_ff):
        super().__init__()
        head_dim = d_model // num_heads
        angles = torch.arange(context_length)[:, None] * 10000.0 ** (-torch.arange(0, head_dim, 2) / head_dim)
        self.emb = nn.Embedding(vocab_size, d_model)
        self.blocks = nn.ModuleList(
            TorchBlock(d_model, num_heads, d_ff, angles.cos(), angles.sin()) for _ in range(num_layers)
        )
        self.ln_f = nn.RMSNorm(d_model, eps=1e-5)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn, ids, targets):
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        logits = model(ids)
        loss_fn(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)).backward()
        optimizer.step()

    return step


def throughput(name: str, steps: int) -> list[dict]:
    cfg = dict(CONFIGS[name])
    batch = cfg.pop("batch")
    d_ff = cfg["d_ff"] or 64 * -(-8 * cfg["d_model"] // (3 * 64))
    ids = torch.randint(0, cfg["vocab_size"], (batch, cfg["context_length"] + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    runners = {}
    for backend in ("naive", "torch_sdpa"):
        ours = TransformerLM(**{**cfg, "d_ff": d_ff}, attn_backend=backend)
        runners[f"ours ({backend})"] = make_step(
            ours, AdamW(ours.parameters(), lr=1e-4), cross_entropy, inputs, targets
        )
    peer = TorchLM(**{**cfg, "d_ff": d_ff})
    opt = torch.optim.AdamW(peer.parameters(), lr=1e-4)
    runners["torch-native"] = make_step(peer, opt, F.cross_entropy, inputs, targets)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(2):  # warm-up
        for run in runners.values():
            run()
    for _ in range(steps):  # alternate so that load spikes hit every variant alike
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    tokens = batch * cfg["context_length"]
    peer_time = statistics.median(times["torch-native"])
    rows = []
    for key, values in times.items():
        median = statistics.median(values)
        rows.append(
            {"config": name, "model": key, "ms": 1e3 * median, "tok_s": tokens / median, "ratio": peer_time / median}
        )
    return rows


class RecomputeOnly(nn.Module):
    """Hides a model's KV cache so ``generate`` recomputes the whole prefix every step (the decoding peer)."""

    def __init__(self, model: TransformerLM) -> None:
        super().__init__()
        self.model, self.context_length = model, model.context_length

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)


def decoding(new_tokens: int) -> list[dict]:
    """Greedy decoding of the tinystories-shaped model, 4 prompts of 16 tokens: KV cache vs prefix recomputation."""
    cfg = dict(CONFIGS["tinystories"])
    cfg.pop("batch")
    model = TransformerLM(**cfg)
    prompts = torch.randint(0, cfg["vocab_size"], (4, 16)).tolist()
    rows = []
    for name, runner in (("KV cache", model), ("recompute prefix", RecomputeOnly(model))):
        start = time.perf_counter()
        generate(runner, prompts, new_tokens, temperature=0)
        seconds = time.perf_counter() - start
        rows.append({"mode": name, "ms_per_token": 1e3 * seconds / new_tokens})
    for row in rows:
        row["speedup"] = rows[1]["ms_per_token"] / row["ms_per_token"]
        print(f"decode {row['mode']:17s} {row['ms_per_token']:8.1f} ms/token  {row['speedup']:.2f}x", flush=True)
    return rows


def saved_activation_mib(fn) -> float:
    """MiB of distinct tensor storage autograd keeps for the backward pass of ``fn()`` (the activation memory)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2**20


def sweep(lengths: list[int], steps: int) -> list[dict]:
    """One block (d_model 256, 4 heads, batch 1) forward + backward per attention backend and sequence length."""
    rows = []
    for seq_len in lengths:
        for backend in ("naive", "torch_sdpa"):
            torch.manual_seed(0)
            block = TransformerBlock(256, 4, None, max_seq_len=seq_len, attn_backend=backend)
            x = torch.randn(1, seq_len, 256, requires_grad=True)
            mib = saved_activation_mib(functools.partial(block, x))
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                block(x).sum().backward()
                times.append(time.perf_counter() - start)
            seconds = statistics.median(times)
            rows.append({"seq_len": seq_len, "backend": backend, "ms": 1e3 * seconds, "mib": mib})
            print(f"seq {seq_len:5d} {backend:10s} {1e3 * seconds:9.1f} ms  saved {mib:7.1f} MiB", flush=True)
    return rows


def write_results(command: str, throughput_rows: list[dict], sweep_rows: list[dict], decode_rows: list[dict]) -> None:
    lines = [
        "# Transformer benchmarks",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        "2-core CPU shared with other jobs (absolute numbers are noisy; ratios are measured in the same run, "
        f"alternating)  \nTorch {torch.__version__}; ours uses `cs336_basics.optim.adamw.AdamW`, the peer "
        "`torch.optim.AdamW`.",
        "",
        "## Training step (forward + cross-entropy + backward + AdamW)",
        "",
        "| config | model | ms / step | tokens / s | peer time / our time |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['config']} | {r['model']} | {r['ms']:.1f} | {r['tok_s']:.0f} | {r['ratio']:.2f}x |"
        for r in throughput_rows
    ]
    lines += [
        "",
        "## One block, forward + backward vs sequence length (batch 1, d_model 256, 4 heads)",
        "",
        "| seq_len | attention | ms / step | saved for backward (MiB) |",
        "| ---: | --- | ---: | ---: |",
    ]
    lines += [f"| {r['seq_len']} | {r['backend']} | {r['ms']:.1f} | {r['mib']:.0f} |" for r in sweep_rows]
    lines += [
        "",
        f"## Greedy decoding, tinystories shape, 4 prompts of 16 tokens, {DECODE_TOKENS} new tokens each",
        "",
        "| mode | ms / step (4 tokens) | speed-up vs recompute |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {r['mode']} | {r['ms_per_token']:.1f} | {r['speedup']:.2f}x |" for r in decode_rows]
    RESULTS.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and a shorter sweep (smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 10, quick 3)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: steadier on a shared machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (3 if args.quick else 10)
    torch.manual_seed(0)
    rows = []
    for name in CONFIGS:
        for row in throughput(name, steps):
            rows.append(row)
            print(
                f"{row['config']:12s} {row['model']:18s} {row['ms']:8.1f} ms {row['tok_s']:9.0f} tok/s "
                f"ratio {row['ratio']:.2f}x",
                flush=True,
            )
    lengths = [256, 1024] if args.quick else [256, 512, 1024, 2048, 4096]
    sweep_rows = sweep(lengths, steps=2 if args.quick else 3)
    decode_rows = decoding(16 if args.quick else DECODE_TOKENS)
    command = " ".join(["uv run python benchmarks/bench_transformer.py", *sys.argv[1:]])
    write_results(command, rows, sweep_rows, decode_rows)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
