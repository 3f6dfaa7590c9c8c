"""Selective-scan benchmarks: chunked vs sequential reference on CPU, and Triton on CUDA.

CPU mode times forward + backward of the ``chunked`` scan against the ``reference`` loop, interleaving the two so
that load from other jobs hits both alike, and reports the median of each and their ratio. ``--clock thread`` times
in this thread's CPU time instead of wall time: on a shared machine, time spent descheduled is noise for both.

GPU mode (skipped without CUDA) times Triton forward + backward against the reference at a Mamba-sized shape and
against the memory-bandwidth bound: the bytes that must move (read every input once and write every output and
gradient once) divided by the HBM bandwidth (``--hbm-bandwidth``, default 3.35e12 B/s for an H100 SXM).

    uv run python benchmarks/bench_selective_scan.py --threads 1 --clock thread   # CPU
    uv run python benchmarks/bench_selective_scan.py --gpu      # CUDA (needs a GPU)

Prints the table; ``--write`` also rewrites ``benchmarks/results/selective_scan.md``.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from pathlib import Path

import torch

from kernels.selective_scan import selective_scan

RESULTS = Path(__file__).parent / "results" / "selective_scan.md"
CPU_NOTE = (
    "Reading: the reference pays a fixed per-step launch cost on (b, d, n) slices, forward and again in autograd's "
    "replay; the chunked scan takes ~2 sqrt(L) Python steps per direction (hand-written backward) and streams a few "
    "(b, d, L, n) tensors (decays, states, adjoint) through memory, in buffers reused across calls (no page faults "
    "after the first call). So the speed-up grows with L and where b*d is small (launch-bound reference), and "
    "shrinks as b*d*n grows and the chunked scan becomes memory-bound."
)


def make_inputs(b: int, d: int, n: int, L: int, device: str, dtype: torch.dtype = torch.float32) -> dict:
    """Mamba-like inputs: A < 0, softplus step sizes around 0.01-0.1 via delta_bias, all tensors requiring grad."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)
    x = {
        "u": r(b, d, L),
        "delta": r(b, d, L) * 0.5,
        "A": -torch.rand(d, n, generator=g) * n - 0.5,
        "B": r(b, n, L),
        "C": r(b, n, L),
        "D": r(d),
        "z": r(b, d, L),
        "delta_bias": torch.full((d,), -3.0),
    }
    return {k: v.to(device=device, dtype=dtype).requires_grad_() for k, v in x.items()}


def fwd_bwd(x: dict, backend: str) -> None:
    y = selective_scan(**x, delta_softplus=True, backend=backend)
    torch.autograd.grad(y.sum(), list(x.values()))


def time_pair(
    x: dict, backends: tuple[str, str], reps: tuple[int, int], sync=lambda: None, clock=time.perf_counter
) -> list[float]:
    """Seconds of every fwd+bwd run of each backend, measured interleaved after one warm-up each."""
    times: list[list[float]] = [[], []]
    for backend in backends:
        fwd_bwd(x, backend)
        sync()
    for rep in range(max(reps)):
        for i, backend in enumerate(backends):
            if rep < reps[i]:
                sync()
                start = clock()
                fwd_bwd(x, backend)
                sync()
                times[i].append(clock() - start)
    return times


def cpu_rows(shapes: list[tuple[int, int, int, int]], clock=time.perf_counter) -> list[str]:
    rows = []
    for b, d, n, L in shapes:
        x = make_inputs(b, d, n, L, "cpu")
        ref_reps = 5 if L <= 1024 else 2
        runs_chunked, runs_ref = time_pair(x, ("chunked", "reference"), (9, ref_reps), clock=clock)
        t_chunked, t_ref = statistics.median(runs_chunked), statistics.median(runs_ref)
        spread = f"{min(runs_chunked) * 1e3:.1f}-{max(runs_chunked) * 1e3:.1f}"
        line = (
            f"| {b} | {d} | {n} | {L} | {t_ref * 1e3:.1f} | {t_chunked * 1e3:.1f} | {spread} | "
            f"{t_ref / t_chunked:.1f}x | {t_ref / min(runs_chunked):.1f}x |"
        )
        print(line, flush=True)
        rows.append(line)
    return rows


def gpu_rows(bandwidth: float) -> list[str]:
    b, d, n, L = 8, 1536, 16, 2048
    x = make_inputs(b, d, n, L, "cuda")
    runs = time_pair(x, ("triton", "reference"), (10, 2), sync=torch.cuda.synchronize)
    t_triton, t_ref = (statistics.median(r) for r in runs)
    elt = 4  # float32
    # fwd reads u, delta, z, B, C and writes y; bwd reads them plus dy and writes du, ddelta, dz, dB, dC.
    bytes_moved = elt * (b * d * L * (4 + 3 + 4) + b * n * L * (2 + 2 + 2))
    bound = bytes_moved / bandwidth
    line = (
        f"| {b} | {d} | {n} | {L} | {t_ref * 1e3:.1f} | {t_triton * 1e3:.2f} | {t_ref / t_triton:.0f}x | "
        f"{bound * 1e3:.3f} | {bound / t_triton:.1%} |"
    )
    print(line, flush=True)
    return [line]


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/bench_selective_scan.py", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--gpu", action="store_true", help="time the Triton kernels on CUDA instead of CPU")
    parser.add_argument("--hbm-bandwidth", type=float, default=3.35e12, help="GPU memory bandwidth in bytes/s")
    parser.add_argument("--machine", default="2-core CPU, shared with other jobs", help="machine label for the table")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall", help="CPU mode: wall or thread CPU time")
    parser.add_argument("--write", action="store_true", help=f"rewrite benchmarks/results/{RESULTS.name}")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"Date: {stamp}. Machine: {args.machine} ({platform.processor() or platform.machine()}), "
        f"{torch.get_num_threads()} torch thread(s).",
        "",
    ]
    if args.gpu:
        if not torch.cuda.is_available():
            print("no CUDA device: GPU mode skipped")
            return
        command = "uv run python benchmarks/bench_selective_scan.py --gpu --write"
        head = "| b | d | n | L | reference ms | triton ms | speed-up | bandwidth bound ms | of bound |"
        print(head)
        rows = gpu_rows(args.hbm_bandwidth)
        title = f"## Triton vs reference, forward + backward, float32, {torch.cuda.get_device_name()}"
    else:
        torch.manual_seed(0)
        threads = f" --threads {args.threads}" if args.threads else ""
        command = f"uv run python benchmarks/bench_selective_scan.py{threads} --clock {args.clock} --write"
        head = "| b | d | n | L | reference ms | chunked ms | chunked min-max ms | speed-up | vs fastest chunked |"
        print(head)
        clock = time.thread_time if args.clock == "thread" else time.perf_counter
        rows = cpu_rows([(2, 64, 16, 256), (2, 64, 16, 1024), (2, 128, 16, 1024), (1, 16, 16, 4096)], clock=clock)
        title = (
            f"## Chunked vs reference, forward + backward, float32, CPU, {args.clock} time "
            "(median of 9 chunked / 5 reference runs, 2 at L=4096)"
        )
        rows += ["", CPU_NOTE]
    if args.write:
        sep = "|" + "---|" * (head.count("|") - 1)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join([title, "", f"Command: `{command}`", *header, head, sep, *rows, ""]))


if __name__ == "__main__":
    main()
