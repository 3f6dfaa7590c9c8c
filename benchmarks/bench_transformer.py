"""Training-step throughput of our transformer_lm vs a torch-native peer, and attention cost vs sequence length.

Run from the repository root::

    uv run python benchmarks/bench_transformer.py --write    # full run, writes benchmarks/results/transformer.md
    uv run python benchmarks/bench_transformer.py --quick    # fewer steps, shorter sweep (smoke test, printed only)
    uv run python benchmarks/bench_transformer.py --device cuda --compile --write   # GPU tokens/s and MFU (appends)

1. Throughput. One training step = forward, cross-entropy, backward and an AdamW step. "ours" is
   ``transformer_lm`` (from-scratch layers, our cross-entropy, our ``AdamW``) with the naive or the ``torch_sdpa``
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
4. Device mode (``--device cuda|cpu``; only the throughput part). The same three training steps on one device,
   optionally under bf16 autocast and ``torch.compile``, each variant timed alone after warm-up steps (which
   absorb compilation), with ``torch.cuda.synchronize`` around the timed block. MFU = achieved training FLOP/s /
   ``--peak-tflops``, with FLOPs per token from ``transformer_flops_per_token`` (6 N-style matmul count with the
   full T x T attention, as in PaLM's MFU). On CUDA the table is appended to the result file under a new heading;
   ``--device cpu`` only prints (a smoke test of the code path).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.metadata
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cs336_basics.models.factory import transformer_lm
from cs336_basics.models.ffn import default_d_ff
from cs336_basics.models.flops import transformer_flops_per_token
from cs336_basics.models.transformer import TransformerBlock
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.optim.adamw import AdamW
from cs336_basics.training.generation import generate

RESULTS = Path(__file__).parent / "results" / "transformer.md"
DECODE_TOKENS = 128
SHAPES = {  # model shapes (d_ff None = the SwiGLU default, 8/3 d_model rounded up to a multiple of 64)
    "small": dict(vocab_size=10000, context_length=64, d_model=128, num_layers=4, num_heads=4, d_ff=None),
    "tinystories": dict(vocab_size=10000, context_length=256, d_model=512, num_layers=4, num_heads=16, d_ff=1344),
    "gpt2-124m": dict(vocab_size=50257, context_length=1024, d_model=768, num_layers=12, num_heads=12, d_ff=3072),
}
CPU_BATCH = {"small": 12, "tinystories": 4}  # the CPU suite's configs and batch sizes
DEVICE_BATCH = {"small": 12, "tinystories": 64, "gpt2-124m": 16}  # device mode defaults (16k tokens a step on GPU)


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
        self.register_buffer("cos", rope_cos, persistent=False)  # buffers, so that .to(device) moves them
        self.register_buffer("sin", rope_sin, persistent=False)

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


VARIANTS = ("ours (naive)", "ours (torch_sdpa)", "torch-native")


def build_variant(
    variant: str, shape: dict, device: torch.device | str
) -> tuple[nn.Module, torch.optim.Optimizer, Callable]:
    """Model, optimizer and loss function of one benchmarked variant (one of ``VARIANTS``), on ``device``."""
    shape = {**shape, "d_ff": shape["d_ff"] or default_d_ff(shape["d_model"], "swiglu")}
    if variant == "torch-native":
        peer = TorchLM(**shape).to(device)
        return peer, torch.optim.AdamW(peer.parameters(), lr=1e-4), F.cross_entropy
    ours = transformer_lm(**shape, attn_backend=variant.removeprefix("ours (").removesuffix(")")).to(device)
    return ours, AdamW(ours.parameters(), lr=1e-4), cross_entropy


def make_step(model, optimizer, loss_fn, ids, targets, autocast: Callable = contextlib.nullcontext) -> Callable:
    """One training step: forward under ``autocast()``, cross-entropy on float32 logits, backward, optimizer step."""

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(ids)  # (B, T, V)
            loss = loss_fn(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1))
        loss.backward()
        optimizer.step()

    return step


def throughput(name: str, steps: int) -> list[dict]:
    shape, batch = SHAPES[name], CPU_BATCH[name]
    ids = torch.randint(0, shape["vocab_size"], (batch, shape["context_length"] + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    runners = {v: make_step(*build_variant(v, shape, "cpu"), inputs, targets) for v in VARIANTS}
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(2):  # warm-up
        for run in runners.values():
            run()
    for _ in range(steps):  # alternate so that load spikes hit every variant alike
        for key, run in runners.items():
            start = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - start)
    tokens = batch * shape["context_length"]
    peer_time = statistics.median(times["torch-native"])
    rows = []
    for key, values in times.items():
        median = statistics.median(values)
        rows.append(
            {"config": name, "model": key, "ms": 1e3 * median, "tok_s": tokens / median, "ratio": peer_time / median}
        )
    return rows


def timed_steps(step: Callable, device: torch.device, warmup: int, steps: int) -> dict:
    """Mean seconds per step over ``steps`` steps after ``warmup`` untimed ones, and peak memory (GiB, CUDA only)."""
    cuda = device.type == "cuda"
    for _ in range(warmup):  # compilation and autotuning happen here
        step()
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = (time.perf_counter() - start) / steps
    return {"ms": 1e3 * seconds, "gib": torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None}


def device_throughput(name: str, batch: int, device: torch.device, args: argparse.Namespace) -> list[dict]:
    """Training tokens/s and MFU of every variant on ``device``, one variant at a time (docstring, part 4)."""
    shape = SHAPES[name]
    flops_per_token = transformer_flops_per_token(
        d_model=shape["d_model"],
        num_layers=shape["num_layers"],
        seq_len=shape["context_length"],
        vocab_size=shape["vocab_size"],
        d_ff=shape["d_ff"],
    )["training"]
    ids = torch.randint(0, shape["vocab_size"], (batch, shape["context_length"] + 1), device=device)
    inputs, targets = ids[:, :-1], ids[:, 1:]
    autocast = functools.partial(
        torch.autocast, device_type=device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16"
    )
    tokens = batch * shape["context_length"]
    rows = []
    for variant in VARIANTS:
        torch.manual_seed(0)
        model, optimizer, loss_fn = build_variant(variant, shape, device)
        row = {"config": name, "model": variant, "batch": batch, "context": shape["context_length"], "ms": None}
        row["params"] = sum(p.numel() for p in model.parameters())
        step = make_step(torch.compile(model) if args.compile else model, optimizer, loss_fn, inputs, targets, autocast)
        try:
            row |= timed_steps(step, device, args.warmup, args.steps)
        except torch.OutOfMemoryError:
            row["gib"] = None  # reported as OOM; the next variant still runs
        del model, optimizer, step
        if args.compile:
            torch.compiler.reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if row["ms"] is not None:
            row["tok_s"] = tokens / (row["ms"] / 1e3)
            row["mfu"] = flops_per_token * row["tok_s"] / (args.peak_tflops * 1e12)
        rows.append(row)
    peer_ms = rows[-1]["ms"]
    for row in rows:
        row["ratio"] = peer_ms / row["ms"] if peer_ms is not None and row["ms"] is not None else None
    return rows


def device_table(rows: list[dict]) -> list[str]:
    """Markdown table of ``device_throughput`` rows (OOM where a variant ran out of memory)."""
    lines = [
        "| config | model | params (M) | batch x context | ms / step | tokens / s | MFU | peak memory (GiB) "
        "| peer time / our time |",
        "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        head = f"| {r['config']} | {r['model']} | {r['params'] / 1e6:.1f} | {r['batch']} x {r['context']} |"
        if r["ms"] is None:
            lines.append(head + " OOM | | | | |")
            continue
        gib = f"{r['gib']:.1f}" if r["gib"] is not None else "-"
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        lines.append(head + f" {r['ms']:.1f} | {r['tok_s']:.0f} | {100 * r['mfu']:.1f}% | {gib} | {ratio} |")
    return lines


def append_device_results(command: str, rows: list[dict], args: argparse.Namespace) -> None:
    """Append a CUDA run's table to the result file under its own heading (earlier sections are kept)."""
    try:
        triton = importlib.metadata.version("triton")
    except importlib.metadata.PackageNotFoundError:
        triton = "not installed"
    lines = [
        "",
        f"## GPU training step: {torch.cuda.get_device_name()}, {args.precision}, "
        f"torch.compile {'on' if args.compile else 'off'}",
        "",
        f"Command: `{command}`  ",
        f"Date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC  ",
        f"Torch {torch.__version__}, CUDA {torch.version.cuda}, Triton {triton}. Each variant timed alone: "
        f"{args.steps} steps after {args.warmup} warm-up steps (compilation excluded), synchronized. MFU = training "
        f"FLOP/s / {args.peak_tflops:g} TFLOP/s, FLOPs per token from `transformer_flops_per_token` (3x forward "
        "matmuls, attention over the full T x T scores). Step = forward + float32 cross-entropy + backward + AdamW "
        "(ours: `cs336_basics.optim.adamw.AdamW`; peer: `torch.optim.AdamW` defaults).",
        "",
        *device_table(rows),
    ]
    with RESULTS.open("a") as f:
        f.write("\n".join(lines) + "\n")


class RecomputeOnly(nn.Module):
    """Hides a model's KV cache so ``generate`` recomputes the whole prefix every step (the decoding peer)."""

    def __init__(self, model: transformer_lm) -> None:
        super().__init__()
        self.model, self.context_length = model, model.context_length

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(ids)


def decoding(new_tokens: int) -> list[dict]:
    """Greedy decoding of the tinystories-shaped model, 4 prompts of 16 tokens: KV cache vs prefix recomputation."""
    model = transformer_lm(**SHAPES["tinystories"])
    prompts = torch.randint(0, SHAPES["tinystories"]["vocab_size"], (4, 16)).tolist()
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
            block = TransformerBlock.standalone(256, 4, None, max_seq_len=seq_len, attn_backend=backend)
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


def write_results(
    command: str, throughput_rows: list[dict], sweep_rows: list[dict], decode_rows: list[dict], write: bool = False
) -> None:
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
    print("\n".join(lines))
    if not write:
        print(f"(not written: pass --write to update {RESULTS.name})")
        return
    old = RESULTS.read_text() if RESULTS.exists() else ""
    gpu = old[old.index("\n## GPU") :] if "\n## GPU" in old else ""  # device-mode sections survive a CPU rerun
    RESULTS.write_text("\n".join(lines) + "\n" + gpu)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_transformer.py", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="write (CPU) or append (CUDA) the results file")
    parser.add_argument("--quick", action="store_true", help="fewer steps and a shorter sweep (smoke test)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant (default 10/20, quick 3)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: steadier on a shared machine)"
    )
    device = parser.add_argument_group("device mode (training tokens/s and MFU; appends to the results on CUDA)")
    device.add_argument("--device", choices=["cpu", "cuda"], default=None, help="run device mode on this device")
    device.add_argument("--precision", choices=["bf16", "fp32"], default=None, help="bf16 autocast (default) or fp32")
    device.add_argument("--compile", action="store_true", help="torch.compile each model (compile time excluded)")
    device.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="MFU denominator (default 989: H100 SXM dense bf16; give the fp32 peak with --precision fp32)",
    )
    device.add_argument("--batch", type=int, default=None, help=f"sequences per step (default {DEVICE_BATCH})")
    device.add_argument(
        "--configs", nargs="+", choices=list(SHAPES), default=None, help="default tinystories gpt2-124m"
    )
    device.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3, quick 1)")
    args = parser.parse_args()
    given = [
        f"--{k.replace('_', '-')}"
        for k in ("precision", "peak_tflops", "batch", "configs", "warmup")
        if getattr(args, k) is not None
    ]
    if args.device is None and (given or args.compile):
        raise SystemExit(f"error: {' '.join(given + ['--compile'] * args.compile)} need --device cuda (or cpu)")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            f"error: --device cuda but torch {torch.__version__} sees no CUDA device; run on a GPU machine"
        )
    counts = {"--steps": args.steps, "--batch": args.batch, "--threads": args.threads, "--warmup": args.warmup}
    bad = [f"{k} {v}" for k, v in counts.items() if v is not None and v < (0 if k == "--warmup" else 1)]
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        bad.append(f"--peak-tflops {args.peak_tflops:g}")
    if bad or (args.compile and args.warmup == 0):
        raise SystemExit(
            f"error: {', '.join(bad) or '--warmup 0'}: need --steps/--batch/--threads >= 1, --peak-tflops > 0, "
            "--warmup >= 0 "
            "(>= 1 with --compile, to exclude compile time)"
        )
    args.precision = args.precision or "bf16"
    args.peak_tflops = args.peak_tflops or 989.0
    args.configs = args.configs or ["tinystories", "gpt2-124m"]
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    args.steps = args.steps or (3 if args.quick else (20 if args.device else 10))
    return args


def run_device(args: argparse.Namespace, command: str) -> None:
    device = torch.device(args.device)
    rows = []
    for name in args.configs:
        rows += device_throughput(name, args.batch or DEVICE_BATCH[name], device, args)
        print("\n".join(device_table(rows[-len(VARIANTS) :])), flush=True)
    if device.type == "cuda" and not args.write:
        print(f"(not appended: pass --write to add this table to {RESULTS.name})")
    elif device.type == "cuda":
        append_device_results(command, rows, args)
        print(f"appended to {RESULTS}")
    else:
        print(f"--device cpu: printed only; {RESULTS.name} records CUDA runs")


def run_cpu_suite(args: argparse.Namespace, command: str) -> None:
    rows = []
    for name in CPU_BATCH:
        for row in throughput(name, args.steps):
            rows.append(row)
            print(
                f"{row['config']:12s} {row['model']:18s} {row['ms']:8.1f} ms {row['tok_s']:9.0f} tok/s "
                f"ratio {row['ratio']:.2f}x",
                flush=True,
            )
    lengths = [256, 1024] if args.quick else [256, 512, 1024, 2048, 4096]
    sweep_rows = sweep(lengths, steps=2 if args.quick else 3)
    decode_rows = decoding(16 if args.quick else DECODE_TOKENS)
    write_results(command, rows, sweep_rows, decode_rows, args.write)
    if args.write:
        print(f"wrote {RESULTS}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    command = " ".join(["uv run python benchmarks/bench_transformer.py", *sys.argv[1:]])
    (run_device if args.device else run_cpu_suite)(args, command)


if __name__ == "__main__":
    main()
