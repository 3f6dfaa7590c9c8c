"""The GPU path in one command: tests, Triton scan, bf16 + torch.compile MFU, Mamba/hybrid, generation.

    PYTHONPATH=. python benchmarks/gpu_check.py --out gpu_results     # on a CUDA machine, about 8 minutes at most
    PYTHONPATH=. python benchmarks/gpu_check.py --out /tmp/x --smoke  # every step at tiny sizes on CPU (CI)

Writes ``OUT/results.json`` and ``OUT/results.md`` (rewritten after every step, so an interrupted run keeps what it
measured). Steps, each in its own process with its own time budget; a step that fails or runs out of time records
its error and partial rows, and the next step runs:

(a) ``pytest -m gpu`` on the test modules that carry the ``gpu`` marker;
(b) the selective scan, forward + backward, Triton vs the sequential reference and the chunked scan at L 1k/4k/16k
    (b 4, d 1536, n 16, float32), and Triton's time against the bytes that must cross HBM (every input read once,
    every output and gradient written once) at the card's peak bandwidth (goal: >= 20x the reference, >= 50%);
(c) a GPT-2-small-shape Transformer (d 768, 12 layers, 12 heads, SiLU MLP 3072, tied embeddings, 124M) training
    step in bf16 autocast with ``torch.compile``: tokens/s and MFU (FLOPs from ``transformer_flops_per_token``,
    3x forward) beside a torch-native twin of the same shape (goal: >= 40% MFU);
(d) Mamba (24 layers, d 768) and an AMAM hybrid (12 layers) of ~125M: training tokens/s in bf16 autocast with the
    Triton scan vs the reference scan;
(e) generation tokens/s, batch 1 and 16: the Transformer with its KV cache and Mamba with its recurrent state.

It needs no ``uv`` and no network: plain ``python`` with the repository on ``PYTHONPATH`` and the machine's own
PyTorch and Triton. Besides torch/triton/numpy, the modules it loads import ``jaxtyping``, ``regex`` and ``tqdm``
at module level (and ``pytest`` for step a); ``benchmarks/gpu_wheels.sh`` downloads them as wheels where a GPU
machine lacks them. ``--smoke`` runs every step at tiny sizes on CPU, Triton under ``TRITON_INTERPRET=1`` and
``torch.compile`` with its ``eager`` backend (graph capture without code generation), which the test suite does so
that this script cannot rot.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROCESS_STARTED = time.perf_counter()  # a step's budget counts from its process's start, imports included
ROOT = Path(__file__).resolve().parents[1]
STEPS = {  # key: (title, budget in seconds on a GPU); --smoke gives every step SMOKE_BUDGET_S instead
    "a": ("pytest -m gpu", 90),
    "b": ("selective scan: Triton vs reference vs chunked, fwd+bwd", 70),
    "c": ("GPT-2-small Transformer training step, bf16 + torch.compile, vs torch-native twin", 140),
    "d": ("Mamba and AMAM hybrid (~125M) training step: Triton scan vs reference scan", 90),
    "e": ("generation tokens/s: KV cache (Transformer) and recurrent state (Mamba)", 30),
}
SMOKE_BUDGET_S = 300  # tiny sizes never need it; generous so that a loaded CI machine skips nothing
GRACE_S = 10  # a step's process is killed this long after its budget
HBM_BYTES_PER_S = {"H200": 4.8e12, "H100 PCIe": 2.0e12, "H100 NVL": 3.9e12, "H100": 3.35e12, "A100": 2.0e12}
BF16_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "A100": 312.0}


def card_figure(name: str, table: dict[str, float]) -> float | None:
    """The first table entry whose key occurs in the device name (most specific keys come first)."""
    return next((value for key, value in table.items() if key in name), None)


# ----- what every step gets ------------------------------------------------------------------------------------------
class Step:
    """A running step: device, sizes, time left, and its rows (saved to disk after every row)."""

    def __init__(self, key: str, args: argparse.Namespace, path: Path) -> None:
        import torch

        self.key, self.args, self.path, self.smoke = key, args, path, args.smoke
        self.started = PROCESS_STARTED if args.child else time.perf_counter()
        self.budget = args.budget
        self.device = torch.device("cpu" if args.smoke else "cuda")
        self.rows: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.status, self.error = "running", None

    def time_left(self) -> float:
        return self.budget - (time.perf_counter() - self.started)

    def enough_time(self, needed_s: float, what: str) -> bool:
        """False (and a row saying so) when less than ``needed_s`` of the budget is left for ``what``."""
        if self.time_left() >= needed_s:
            return True
        self.add({"what": what, "skipped": f"time budget ({self.time_left():.0f} s left, ~{needed_s:.0f} s needed)"})
        return False

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.save()

    def save(self) -> None:
        out = {"key": self.key, "title": STEPS[self.key][0], "status": self.status, "error": self.error}
        out |= {"seconds": time.perf_counter() - self.started, "rows": self.rows, "notes": self.notes}
        self.path.write_text(json.dumps(out, indent=1, default=str))

    def sync(self) -> None:
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def timed(step: Step, fn: Callable[[], Any], reps: int, warmup: int = 1) -> list[float]:
    """Seconds of each of ``reps`` calls after ``warmup`` untimed ones, synchronised around each call."""
    for _ in range(warmup):
        fn()
    step.sync()
    times = []
    for _ in range(reps):
        step.sync()
        start = time.perf_counter()
        fn()
        step.sync()
        times.append(time.perf_counter() - start)
    return times


def free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----- (a) the gpu-marked tests ---------------------------------------------------------------------------------------
def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in p.read_text())


def step_pytest(step: Step) -> None:
    files = gpu_test_files()
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(step.time_left() - 2, 1)
        )
    except subprocess.TimeoutExpired as error:
        out = error.stdout.decode() if isinstance(error.stdout, bytes) else error.stdout or ""
        step.notes.append(out[-3000:])
        raise TimeoutError("pytest -m gpu did not finish within the step's budget") from None
    found = re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", done.stdout)
    counts = {f"tests {k}": int(v) for v, k in found}
    step.add({"what": "pytest -m gpu " + " ".join(files), "exit code": done.returncode, **counts})
    failures = [line for line in done.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    step.notes.extend(failures or [done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""])
    if done.returncode not in (0, 5):
        step.notes.append(done.stdout[-3000:])
        raise RuntimeError(f"pytest -m gpu exited {done.returncode}: {', '.join(failures)[:500]}")


# ----- (b) the selective scan -----------------------------------------------------------------------------------------
def scan_inputs(b: int, d: int, n: int, L: int, device, dtype) -> dict:
    """The scan benchmark's Mamba-like inputs (A < 0, softplus step sizes around 0.01-0.1), all requiring grad."""
    from benchmarks.bench_selective_scan import make_inputs

    return make_inputs(b, d, n, L, device, dtype)


def scan_fwd_bwd(x: dict, backend: str) -> None:
    import torch

    from kernels.selective_scan import selective_scan

    y = selective_scan(**x, delta_softplus=True, backend=backend)
    torch.autograd.grad(y.float().sum(), list(x.values()))


def scan_bytes(b: int, d: int, n: int, L: int, element: int) -> int:
    """Bytes a fused fwd+bwd must move at least: reads u, delta, z, B, C (fwd and bwd) and dy, writes y, du, ddelta,
    dz, dB, dC."""
    return element * (b * d * L * (4 + 4 + 3) + b * n * L * (2 + 2 + 2))


def step_scan(step: Step) -> None:
    import torch

    if step.smoke:
        b, d, n, lengths, reps = 1, 4, 4, (8, 16), {"triton": 1, "chunked": 1, "reference": 1}
    else:
        b, d, n, lengths, reps = 4, 1536, 16, (1024, 4096, 16384), {"triton": 10, "chunked": 3, "reference": 1}
    bandwidth = step.args.hbm_bandwidth or (
        card_figure(torch.cuda.get_device_name(), HBM_BYTES_PER_S) if step.device.type == "cuda" else None
    )
    step.notes.append(
        f"b {b}, d {d}, n {n}; median of " + ", ".join(f"{v} {k}" for k, v in reps.items()) + " run(s) after one "
        "warm-up; HBM peak " + (f"{bandwidth / 1e12:.2f} TB/s" if bandwidth else "unknown (pass --hbm-bandwidth)")
    )
    for L in lengths:
        guess = 0.4 * L / 1024 if not step.smoke else 1.0  # the reference's fwd+bwd costs ~0.3 ms per step
        for dtype, backends in ((torch.float32, ("triton", "chunked", "reference")), (torch.bfloat16, ("triton",))):
            x = scan_inputs(b, d, n, L, step.device, dtype)
            row: dict[str, Any] = {"L": L, "dtype": str(dtype).removeprefix("torch.")}
            for backend in backends:
                if backend == "reference" and not step.enough_time(3 * guess + 2, f"reference at L {L}"):
                    continue
                run = lambda x=x, backend=backend: scan_fwd_bwd(x, backend)
                times = timed(step, run, reps[backend], warmup=0 if step.smoke else 1)
                row[f"{backend} ms"] = 1e3 * statistics.median(times)
            if "reference ms" in row:
                row["triton vs reference"] = row["reference ms"] / row["triton ms"]
            if "chunked ms" in row:
                row["triton vs chunked"] = row["chunked ms"] / row["triton ms"]
            bound = scan_bytes(b, d, n, L, x["u"].element_size()) / bandwidth if bandwidth else None
            row["HBM bound ms"] = 1e3 * bound if bound else None
            row["of HBM bound"] = bound / (row["triton ms"] / 1e3) if bound else None
            step.add(row)
            del x
            free_memory()


# ----- (c) GPT-2-small training step ----------------------------------------------------------------------------------
def gpt2_shape(smoke: bool) -> dict[str, Any]:
    if smoke:
        return dict(vocab_size=64, context_length=16, d_model=32, num_layers=1, num_heads=2, d_ff=64)
    return dict(vocab_size=50257, context_length=1024, d_model=768, num_layers=12, num_heads=12, d_ff=3072)


def torch_twin(shape: dict[str, Any]):
    """The same network as ``build_model("transformer", ..., ffn="silu", tie_embeddings=True)`` from torch.nn
    pieces: pre-norm RMSNorm, RoPE, fused causal attention, ungated SiLU MLP, tied embeddings."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    d, heads, T = shape["d_model"], shape["num_heads"], shape["context_length"]
    head_dim = d // heads
    angles = torch.arange(T)[:, None] * 10000.0 ** (-torch.arange(0, head_dim, 2) / head_dim)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
            self.w1, self.w2 = nn.Linear(d, shape["d_ff"], bias=False), nn.Linear(shape["d_ff"], d, bias=False)
            self.ln1, self.ln2 = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
            self.register_buffer("cos", angles.cos(), persistent=False)
            self.register_buffer("sin", angles.sin(), persistent=False)

        def rope(self, x):
            cos, sin = self.cos[: x.shape[-2]], self.sin[: x.shape[-2]]
            x1, x2 = x[..., 0::2], x[..., 1::2]
            return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)

        def forward(self, x):
            B, L, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
            x = x + self.out(y.transpose(1, 2).reshape(B, L, d))
            return x + self.w2(F.silu(self.w1(self.ln2(x))))

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(shape["vocab_size"], d)
            self.blocks = nn.ModuleList(Block() for _ in range(shape["num_layers"]))
            self.ln_f = nn.RMSNorm(d, eps=1e-5)

        def forward(self, ids):
            x = self.emb(ids)
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x) @ self.emb.weight.T

    return Twin()


def train_step_fn(model, optimizer, loss_fn, ids, device_type: str) -> Callable[[], None]:
    import torch

    inputs, targets = ids[:, :-1], ids[:, 1:]

    def run() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16):
            logits = model(inputs)
        loss = loss_fn(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        loss.backward()
        optimizer.step()

    return run


def step_transformer(step: Step) -> None:
    import torch
    import torch.nn.functional as F

    from cs336_basics.models.factory import build_model
    from cs336_basics.models.flops import transformer_flops_per_token
    from cs336_basics.nn.functional import cross_entropy
    from cs336_basics.optim.adamw import AdamW

    shape, batch = gpt2_shape(step.smoke), 2 if step.smoke else 16
    warmup, reps = (1, 1) if step.smoke else (3, 10)
    backend = "eager" if step.smoke else step.args.compile_backend
    flops = transformer_flops_per_token(
        shape["d_model"], shape["num_layers"], shape["context_length"], shape["vocab_size"], shape["d_ff"], "silu"
    )["training"]
    peak = step.args.peak_tflops or (
        card_figure(torch.cuda.get_device_name(), BF16_TFLOPS) if step.device.type == "cuda" else None
    )
    tokens = batch * shape["context_length"]
    step.notes.append(
        f"batch {batch} x {shape['context_length']} tokens, bf16 autocast, torch.compile backend {backend!r}; "
        f"{flops / 1e6:.0f} MFLOP per trained token; peak " + (f"{peak:g} TFLOP/s" if peak else "unknown")
    )
    ids = torch.randint(0, shape["vocab_size"], (batch, shape["context_length"] + 1), device=step.device)
    variants = [("ours, torch_sdpa attention", "torch_sdpa"), ("torch-native twin", None)]
    if not step.smoke:  # the same code path again; on a GPU it shows what the fused attention buys
        variants.append(("ours, naive attention", "naive"))
    for name, attention in variants:
        if not step.enough_time(10 if step.smoke else 60, name):
            continue
        torch.manual_seed(0)
        if attention is None:
            model = torch_twin(shape).to(step.device)
            optimizer, loss_fn = torch.optim.AdamW(model.parameters(), lr=1e-4), F.cross_entropy
        else:
            model = build_model("transformer", **shape, ffn="silu", tie_embeddings=True, attn_backend=attention)
            model = model.to(step.device)
            optimizer, loss_fn = AdamW(model.parameters(), lr=1e-4), cross_entropy
        params = sum(p.numel() for p in model.parameters())
        run = train_step_fn(torch.compile(model, backend=backend), optimizer, loss_fn, ids, step.device.type)
        started = time.perf_counter()
        run()  # compilation
        step.sync()
        compile_s = time.perf_counter() - started
        times = timed(step, run, reps, warmup=warmup - 1)
        seconds = statistics.median(times)
        row = {"model": name, "params (M)": params / 1e6, "compile s": compile_s, "ms / step": 1e3 * seconds}
        row["tokens / s"] = tokens / seconds
        row["MFU"] = flops * tokens / seconds / (peak * 1e12) if peak else None
        if step.device.type == "cuda":
            row["peak GiB"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        step.add(row)
        del model, optimizer, run
        torch.compiler.reset()
        free_memory()
    twin = next((r for r in step.rows if r.get("model") == "torch-native twin" and "tokens / s" in r), None)
    for row in step.rows:
        if twin and "tokens / s" in row:
            row["vs twin"] = row["tokens / s"] / twin["tokens / s"]
    step.save()


# ----- (d) Mamba and hybrid -------------------------------------------------------------------------------------------
def ssm_models(smoke: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    if smoke:
        return {
            "mamba": ("mamba", dict(vocab_size=64, d_model=16, num_layers=1, d_state=4)),
            "hybrid AM": ("hybrid", dict(vocab_size=64, context_length=16, d_model=16, num_heads=2, pattern="AM")),
        }
    return {
        "mamba (24 layers)": ("mamba", dict(vocab_size=50257, d_model=768, num_layers=24)),
        "hybrid AMAM x3": ("hybrid", dict(vocab_size=50257, context_length=1024, d_model=768, num_heads=12,
                                          pattern="AMAM" * 3, attn_backend="torch_sdpa")),
    }  # fmt: skip


def step_ssm(step: Step) -> None:
    import torch

    from cs336_basics.models.factory import build_model
    from cs336_basics.nn.functional import cross_entropy
    from cs336_basics.optim.adamw import AdamW

    batch, T = (2, 16) if step.smoke else (8, 1024)
    reps = {"triton": 1 if step.smoke else 5, "reference": 1}
    step.notes.append(f"batch {batch} x {T} tokens, bf16 autocast, eager; median of the timed steps after one warm-up")
    ids = torch.randint(0, 64 if step.smoke else 50257, (batch, T + 1), device=step.device)
    rows = {name: {"model": name} for name in ssm_models(step.smoke)}
    step.rows.extend(rows.values())  # filled in place, saved after every measurement
    for scan in ("triton", "reference"):  # every Triton row first: the reference is slow and may run out of time
        for name, (architecture, kwargs) in ssm_models(step.smoke).items():
            if not step.enough_time(5 if step.smoke else (15 if scan == "triton" else 30), f"{name}, {scan} scan"):
                continue
            torch.manual_seed(0)
            model = build_model(architecture, **kwargs, tie_embeddings=True, scan_backend=scan).to(step.device)
            row = rows[name]
            row["params (M)"] = sum(p.numel() for p in model.parameters()) / 1e6
            run = train_step_fn(model, AdamW(model.parameters(), lr=1e-4), cross_entropy, ids, step.device.type)
            seconds = statistics.median(timed(step, run, reps[scan], warmup=0 if step.smoke else 1))
            row[f"{scan} ms / step"] = 1e3 * seconds
            row[f"{scan} tokens / s"] = batch * T / seconds
            if "reference ms / step" in row and "triton ms / step" in row:
                row["triton vs reference"] = row["reference ms / step"] / row["triton ms / step"]
            step.save()
            del model, run
            free_memory()


# ----- (e) generation -------------------------------------------------------------------------------------------------
def step_generation(step: Step) -> None:
    import torch

    from cs336_basics.models.factory import build_model
    from cs336_basics.training.generation import generate

    prompt_len, new = (4, 4) if step.smoke else (16, 128)
    shape = gpt2_shape(step.smoke)
    transformer = dict(shape, ffn="silu", tie_embeddings=True, attn_backend="torch_sdpa")
    models = {
        "transformer, KV cache": ("transformer", transformer),
        "mamba, recurrent state": ("mamba", next(iter(ssm_models(step.smoke).values()))[1]),
    }
    step.notes.append(f"{prompt_len}-token prompts, {new} new tokens, greedy (top_p 1e-6), fp32 weights, eager")
    for name, (architecture, kwargs) in models.items():
        torch.manual_seed(0)
        model = build_model(architecture, **kwargs).to(step.device).eval()
        for batch in (1, 16):
            if not step.enough_time(4 if step.smoke else 12, f"{name}, batch {batch}"):
                continue
            prompts = torch.randint(0, kwargs["vocab_size"], (batch, prompt_len)).tolist()
            run = lambda model=model, prompts=prompts: generate(model, prompts, new, top_p=1e-6, seed=0)
            seconds = statistics.median(timed(step, run, 1 if step.smoke else 3, warmup=0 if step.smoke else 1))
            row = {"model": name, "batch": batch, "ms / token": 1e3 * seconds / new}
            step.add(row | {"tokens / s": batch * new / seconds})
        del model
        free_memory()


RUNNERS = {"a": step_pytest, "b": step_scan, "c": step_transformer, "d": step_ssm, "e": step_generation}


# ----- the driver -----------------------------------------------------------------------------------------------------
SMOKE_CHUNK = 4  # Triton's checkpoint spacing in --smoke: the interpreter walks every (masked) step of a chunk


def run_child(key: str, args: argparse.Namespace) -> int:
    """Run one step in this process (``--child``), saving its JSON after every row and at the end."""
    if args.smoke and key in "bd":
        from kernels.selective_scan import triton_scan

        triton_scan.DEFAULT_CHUNK = SMOKE_CHUNK
    step = Step(key, args, args.out / f"step_{key}.json")
    step.save()
    try:
        RUNNERS[key](step)
        step.status = "ok"
    except Exception as error:  # noqa: BLE001 - recorded for the report; the parent goes on with the next step
        step.status, step.error = "failed", f"{type(error).__name__}: {error}"[:2000]
        step.notes.append(traceback.format_exc()[-4000:])
    step.save()
    return 0


def environment() -> dict[str, Any]:
    info: dict[str, Any] = {"python": sys.version.split()[0], "platform": platform.platform()}
    try:
        import torch

        info |= {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
        if torch.cuda.is_available():
            info["device"] = torch.cuda.get_device_name()
    except Exception as error:  # noqa: BLE001
        info["torch"] = f"import failed: {error}"
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception as error:  # noqa: BLE001
        info["triton"] = f"import failed: {error}"
    return info


PERCENT_KEYS = ("MFU", "of HBM bound")


def fmt(key: str, value: Any) -> str:
    """A table cell: percentages for the fractions in ``PERCENT_KEYS``, 3 significant digits for other numbers."""
    if isinstance(value, float):
        if key in PERCENT_KEYS:
            return f"{value:.1%}"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
    return "-" if value is None else str(value).replace("|", "/")


def write_reports(out: Path, meta: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    (out / "results.json").write_text(json.dumps({"meta": meta, "steps": steps}, indent=1, default=str))
    lines = [
        "# GPU check",
        "",
        f"Command: `{meta['command']}`  ",
        f"Date: {meta['date']}; {'smoke run (tiny sizes, CPU)' if meta['smoke'] else 'full run'}; "
        f"total {meta.get('seconds', 0):.0f} s  ",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in meta["environment"].items()),
    ]
    for s in steps:
        lines += ["", f"## ({s['key']}) {s['title']}: {s['status']} ({s.get('seconds', 0):.0f} s)", ""]
        if s.get("error"):
            lines += [f"Error: `{s['error'].splitlines()[0][:300]}`", ""]
        notes = [n for n in s.get("notes", []) if n and "\n" not in n]
        lines += [f"{n}  " for n in notes]
        rows = s.get("rows", [])
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            lines += ["", "| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
            lines += ["| " + " | ".join(fmt(k, r.get(k)) for k in keys) + " |" for r in rows]
    (out / "results.md").write_text("\n".join(lines) + "\n")


def run_all(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if args.smoke:
        env["TRITON_INTERPRET"] = os.environ["TRITON_INTERPRET"] = "1"  # set before the kernels are decorated
    command = "python benchmarks/gpu_check.py " + " ".join(sys.argv[1:])
    meta = {"command": command, "smoke": args.smoke, "environment": environment()}
    meta["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if not args.smoke and not meta["environment"].get("cuda_available"):
        print("gpu_check: no CUDA device is visible; run it on a GPU machine, or pass --smoke for the CPU check")
        return 2
    results: list[dict[str, Any]] = []
    for key in args.steps:
        title = STEPS[key][0]
        budget = (SMOKE_BUDGET_S if args.smoke else STEPS[key][1]) * args.budget_scale
        budget = min(budget, args.total_budget - (time.perf_counter() - started) - GRACE_S)
        path = args.out / f"step_{key}.json"
        path.unlink(missing_ok=True)
        print(f"({key}) {title}: budget {budget:.0f} s", flush=True)
        result: dict[str, Any] = {"key": key, "title": title, "status": "skipped", "rows": [], "notes": []}
        step_started = time.perf_counter()
        if budget < 5:
            result["error"] = "no time left in the total budget"
        elif args.inline:  # same process: no protection from a crash or a hang, but no start-up cost either
            run_child(key, argparse.Namespace(**{**vars(args), "budget": budget}))
            result = json.loads(path.read_text())
        else:
            child = [sys.executable, str(Path(__file__).resolve()), "--child", key, "--budget", str(budget)]
            child += sys.argv[1:]
            try:
                done = subprocess.run(
                    child, cwd=ROOT, env=env, capture_output=True, text=True, timeout=budget + GRACE_S
                )
                tail, status = (done.stderr or "")[-3000:], None if done.returncode == 0 else "crashed"
            except subprocess.TimeoutExpired as error:
                tail = error.stderr.decode(errors="replace")[-3000:] if isinstance(error.stderr, bytes) else ""
                status = "timeout"
            if path.exists():
                result = json.loads(path.read_text())
            if status is not None or result["status"] == "running":
                result["status"] = status or "crashed"
                result["error"] = result.get("error") or f"step process {result['status']}: {tail.strip()[-500:]}"
                result.setdefault("notes", []).append(tail)
        result["seconds"] = time.perf_counter() - step_started
        results.append(result)
        meta["seconds"] = time.perf_counter() - started
        write_reports(args.out, meta, results)
        print(f"({key}) {result['status']} in {result.get('seconds', 0):.0f} s; {len(result['rows'])} row(s)")
        if result.get("error"):
            print(f"    {result['error'].splitlines()[0][:300]}", flush=True)
    failed = [r["key"] for r in results if r["status"] != "ok"]
    print(f"wrote {args.out / 'results.md'} and results.json; steps not ok: {', '.join(failed) or 'none'}")
    return 1 if failed else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory for results.md and results.json")
    parser.add_argument("--smoke", action="store_true", help="every step at tiny sizes on CPU (Triton interpreted)")
    parser.add_argument("--steps", default="abcde", help="which steps to run, e.g. 'bc' (default: abcde)")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every step's time budget")
    parser.add_argument("--total-budget", type=float, default=None, help="seconds for the whole run (default 480)")
    parser.add_argument("--hbm-bandwidth", type=float, default=None, help="HBM bytes/s (default: by card name)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense TFLOP/s (default: by card name)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend for step (c)")
    parser.add_argument("--inline", action="store_true", help="run the steps in this process (no crash isolation)")
    parser.add_argument("--child", choices=sorted(STEPS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--budget", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.total_budget is None:
        args.total_budget = SMOKE_BUDGET_S * len(STEPS) if args.smoke else 480.0
    unknown = sorted(set(args.steps) - set(STEPS))
    if unknown or not args.steps:
        parser.error(f"--steps takes letters from {''.join(STEPS)}; got {args.steps!r}")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out} is a file; give a directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return run_child(args.child, args)
    return run_all(args)


if __name__ == "__main__":
    sys.exit(main())
