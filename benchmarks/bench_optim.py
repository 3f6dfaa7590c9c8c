"""Training-toolkit benchmark: our AdamW, gradient clipping and get_batch against their PyTorch peers, same run.

* AdamW ``step()`` time on the parameter set of a small Transformer LM (embedding, per-layer attention / SwiGLU
  matrices and norm gains: many tensors of mixed size, which is what makes multi-tensor paths matter), ours
  single-tensor and foreach vs ``torch.optim.AdamW`` single-tensor, foreach and (where supported) fused.
* ``clip_gradients`` vs ``torch.nn.utils.clip_grad_norm_`` on the same gradients (always clipping).
* ``get_batch`` vs the nanoGPT idiom (``torch.stack`` of per-row slices) on a uint16 memmap.

Each figure is the median over ``--repeats`` timed calls after warm-up, the variants timed in interleaved rounds
(so a load swing on a shared machine hits all of them alike); on CPU the clock is thread CPU time with torch on one
thread, on CUDA wall time. Run:
``uv run python benchmarks/bench_optim.py [--device cuda] [--layers 4 --d-model 256] [--write]``
(``--write`` updates ``benchmarks/results/optim.md``, or ``optim_<device type>.md`` for other devices).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from cs336_basics.data.batching import get_batch
from cs336_basics.optim.adamw import AdamW
from cs336_basics.optim.clipping import clip_gradients

RESULTS_DIR = Path(__file__).parent / "results"


def transformer_like_parameters(layers: int, d_model: int, vocab: int, device: torch.device) -> list[torch.Tensor]:
    """Parameters shaped like a pre-norm SwiGLU Transformer LM, with random gradients attached."""
    d_ff = 64 * -(-8 * d_model // (3 * 64))
    shapes = [(vocab, d_model)]
    for _ in range(layers):
        shapes += [(d_model, d_model)] * 4 + [(d_ff, d_model), (d_model, d_ff), (d_ff, d_model)] + [(d_model,)] * 2
    shapes += [(d_model,), (vocab, d_model)]
    generator = torch.Generator().manual_seed(0)
    params = []
    for shape in shapes:
        param = torch.nn.Parameter(torch.randn(shape, generator=generator).to(device) * 0.02)
        param.grad = torch.randn(shape, generator=generator).to(device)
        params.append(param)
    return params


def interleaved_medians(
    fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 2
) -> dict[str, float]:
    """Median seconds per call of each function, timed in interleaved rounds so load swings hit all alike.

    On CPU the clock is the calling thread's CPU time (torch runs single-threaded here, see ``main``): on a machine
    shared with other jobs wall time mostly measures the scheduler. On CUDA it is wall time around a synchronize.
    """
    clock = time.perf_counter if device.type == "cuda" else time.thread_time
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = clock()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_adamw(params: list[torch.Tensor], repeats: int, device: torch.device) -> dict[str, float]:
    kwargs = {"lr": 1e-3, "weight_decay": 0.1}
    optimizers = {
        "ours single-tensor": AdamW(params, foreach=False, **kwargs),
        "ours foreach": AdamW(params, foreach=True, **kwargs),
        "torch single-tensor": torch.optim.AdamW(params, foreach=False, **kwargs),
        "torch foreach": torch.optim.AdamW(params, foreach=True, **kwargs),
    }
    if device.type == "cuda":
        optimizers["torch fused"] = torch.optim.AdamW(params, fused=True, **kwargs)
    return interleaved_medians({name: opt.step for name, opt in optimizers.items()}, repeats, device)


def bench_clipping(params: list[torch.Tensor], repeats: int, device: torch.device) -> dict[str, float]:
    grads = [p.grad.clone() for p in params]

    def reset() -> None:
        for p, g in zip(params, grads, strict=True):
            p.grad.copy_(g)

    # The reset is timed in both, so the ratio compares like with like.
    fns = {
        "ours": lambda: (reset(), clip_gradients(params, 1e-3)),
        "torch": lambda: (reset(), torch.nn.utils.clip_grad_norm_(params, 1e-3)),
    }
    return interleaved_medians(fns, repeats, device)


def bench_get_batch(batch: int, context: int, repeats: int, device: torch.device) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokens.bin"
        np.random.default_rng(0).integers(0, 10_000, size=20_000_000, dtype=np.uint16).tofile(path)
        data = np.memmap(path, dtype=np.uint16, mode="r")
        rng = np.random.default_rng(0)

        def nanogpt_style() -> tuple[torch.Tensor, torch.Tensor]:
            ix = torch.randint(len(data) - context, (batch,))
            x = torch.stack([torch.from_numpy(data[i : i + context].astype(np.int64)) for i in ix])
            y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + context].astype(np.int64)) for i in ix])
            return x.to(device), y.to(device)

        fns = {"ours": lambda: get_batch(data, batch, context, device, generator=rng), "nanoGPT": nanogpt_style}
        result = interleaved_medians(fns, repeats, device)
        del data
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench_optim.py", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the table to benchmarks/results/")
    parser.add_argument("--device", default="cpu", help="torch device to run on (cpu, cuda, ...)")
    parser.add_argument("--layers", type=int, default=4, help="Transformer layers whose parameter shapes are used")
    parser.add_argument("--d-model", type=int, default=256, help="model width of the parameter set")
    parser.add_argument("--vocab", type=int, default=10_000, help="vocabulary size (embedding and head rows)")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per variant (median reported)")
    parser.add_argument("--batch", type=int, default=32, help="get_batch batch size")
    parser.add_argument("--context", type=int, default=256, help="get_batch context length")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps thread CPU time exact)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    params = transformer_like_parameters(args.layers, args.d_model, args.vocab, device)
    n_params = sum(p.numel() for p in params)
    adamw = bench_adamw(params, args.repeats, device)
    clipping = bench_clipping(params, args.repeats, device)
    batching = bench_get_batch(args.batch, args.context, args.repeats * 5, device)

    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.2f} ms"

    rows = []
    for peer in [name for name in adamw if name.startswith("torch")]:
        for ours in ("ours single-tensor", "ours foreach"):
            if peer.split()[-1] == ours.split()[-1] or peer == "torch fused":
                rows.append((f"AdamW step: {ours} vs {peer}", adamw[ours], adamw[peer]))
    rows.append(("clip_gradients vs clip_grad_norm_", clipping["ours"], clipping["torch"]))
    rows.append((f"get_batch ({args.batch}x{args.context}, uint16 memmap) vs nanoGPT-style stack", *batching.values()))

    if device.type == "cuda":
        machine = torch.cuda.get_device_name(device)
        name = f"optim_{device.type}.md"
    else:
        machine = f"{os.cpu_count()}-core CPU ({platform.machine()}), shared with other jobs"
        name = "optim.md" if device.type == "cpu" else f"optim_{device.type}.md"
    command = "uv run python benchmarks/bench_optim.py " + " ".join(
        f"--{key.replace('_', '-')} {value}"
        for key, value in vars(args).items()
        if value is not None and key != "write"
    )
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Optimizer / clipping / batching benchmark",
        "",
        f"Command: `{command}`  ",
        f"Date: {now}; machine: {machine}; torch {torch.__version__}, {torch.get_num_threads()} CPU threads.  ",
        f"Parameter set: {len(params)} tensors, {n_params / 1e6:.2f} M parameters "
        f"({args.layers} layers, d_model {args.d_model}, vocab {args.vocab}), float32. Median of timed calls; "
        + ("wall time." if device.type == "cuda" else "CPU time of the calling thread (steadier than wall time here)."),
        "",
        "| measure | ours | peer | ratio (ours/peer, lower is better) |",
        "| --- | --- | --- | --- |",
    ]
    for label, ours_s, peer_s in rows:
        lines.append(f"| {label} | {ms(ours_s)} | {ms(peer_s)} | {ours_s / peer_s:.2f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.write:
        print(f"(not written: pass --write to update benchmarks/results/{name})")
        return
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / name).write_text(text)


if __name__ == "__main__":
    main()
