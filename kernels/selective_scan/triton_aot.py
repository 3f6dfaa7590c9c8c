"""Ahead-of-time compilation of the selective-scan Triton kernels for NVIDIA GPUs, on a machine without one.

``triton.compile(ASTSource(fn, signature, constexprs, attrs), target=GPUTarget("cuda", arch, 32))`` runs the whole
Triton pipeline (TTIR -> TTGIR -> LLVM IR -> PTX) and the ``ptxas`` bundled with Triton, so a CPU-only machine can
check that every kernel variant the dispatcher may launch builds to a cubin for ``sm_80`` (A100) and ``sm_90``
(H100/H200), and read what each one uses (registers, spills, shared memory, cubin size).

What the dispatcher (:mod:`.triton_scan`) can launch, and so what a :class:`Variant` ranges over:

- the boolean constexprs of each kernel (``HAS_D``, ``HAS_Z``, ``HAS_BIAS``, ``SOFTPLUS``; backward also
  ``HAS_DLAST``), read from the kernel's own parameter list so that a new switch is enumerated automatically;
- ``CHUNK = DEFAULT_CHUNK``; ``BLOCK_D = min(DEFAULT_BLOCK_D, next_pow2(d))`` for every ``d >= 1`` and
  ``BLOCK_N = next_pow2(n)`` for ``n`` up to ``MAX_STATE`` (both through ``_launch_config``, the launcher's code);
- the input dtypes: ``fp32`` (everything float32) or ``bf16`` (what a Mamba block passes under bf16 autocast:
  ``u, delta, B, C, z`` and so ``y, dy`` in bfloat16; ``A, D, delta_bias`` and the state buffers in float32);
- how Triton's launcher specialises the integer arguments: ``aligned`` (every size a multiple of 16 and every
  pointer 16-byte aligned, e.g. d 1536, n 16, L 2048), ``generic`` (odd sizes) and ``ones`` (d = n = L = 1, which
  the launcher turns into compile-time constants).

Import this module only where ``TRITON_INTERPRET`` is unset: under the interpreter the kernels are not compilable.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import triton
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend

from kernels.selective_scan.triton_kernels import selective_scan_bwd_kernel, selective_scan_fwd_kernel
from kernels.selective_scan.triton_scan import DEFAULT_BLOCK_D, DEFAULT_CHUNK, _launch_config

KERNELS = {"fwd": selective_scan_fwd_kernel, "bwd": selective_scan_bwd_kernel}
ARCHS = (80, 90)
DTYPES = ("fp32", "bf16")
INT_MODES = ("aligned", "generic", "ones")
MAX_STATE = 256  # the largest d_state the full matrix covers (BLOCK_N up to 256)
SHAPE_CONSTEXPRS = ("CHUNK", "BLOCK_D", "BLOCK_N")
MODEL_STATE = 16  # Mamba's d_state, so BLOCK_N of the model's launches
# Largest dynamic shared memory per block (bytes): sm_80 164 KB - 1 KB reserved, sm_90 228 KB - 1 KB reserved.
MAX_SHARED = {80: 163 * 1024, 90: 227 * 1024}
MAX_REGISTERS = 255
ACTIVATIONS = {"u_ptr", "delta_ptr", "B_ptr", "C_ptr", "z_ptr", "y_ptr", "dy_ptr"}  # in the input dtype
OPTIONAL = {"D_ptr": "HAS_D", "z_ptr": "HAS_Z", "bias_ptr": "HAS_BIAS", "dlast_ptr": "HAS_DLAST"}  # else u is passed
SIZES = {  # integer arguments per int mode, as a launch would pass them (d, L, n_state, n_chunks, n_dblocks)
    "aligned": {"dim": 1536, "L": 2048, "n_state": 16, "n_chunks": 32, "n_dblocks": 48},
    "generic": {"dim": 70, "L": 129, "n_state": 3, "n_chunks": 3, "n_dblocks": 3},
    "ones": {"dim": 1, "L": 1, "n_state": 1, "n_chunks": 1, "n_dblocks": 1},
}


def flag_names(kernel: str) -> tuple[str, ...]:
    """The kernel's boolean constexpr switches, in parameter order (every constexpr but the block shapes)."""
    return tuple(p.name for p in KERNELS[kernel].params if p.is_constexpr and p.name not in SHAPE_CONSTEXPRS)


def launchable_blocks(max_state: int = MAX_STATE) -> tuple[list[int], list[int]]:
    """Every ``BLOCK_D`` and ``BLOCK_N`` the launcher computes (for any d, and for n up to ``max_state``)."""
    block_ds = sorted({_launch_config(d, 1, DEFAULT_BLOCK_D)[0] for d in range(1, 2 * DEFAULT_BLOCK_D + 1)})
    block_ns = sorted({_launch_config(1, n, DEFAULT_BLOCK_D)[1] for n in range(1, max_state + 1)})
    return block_ds, block_ns


@dataclass(frozen=True)
class Variant:
    """One compiled specialisation of one kernel."""

    kernel: str  # "fwd" or "bwd"
    arch: int  # 80 or 90
    dtype: str  # "fp32" or "bf16"
    flags: tuple[tuple[str, bool], ...]
    block_d: int = DEFAULT_BLOCK_D
    block_n: int = MODEL_STATE
    ints: str = "aligned"
    chunk: int = DEFAULT_CHUNK

    @property
    def label(self) -> str:
        on = "+".join(name for name, value in self.flags if value) or "none"
        return (
            f"{self.kernel} sm_{self.arch} {self.dtype} [{on}] BLOCK_D={self.block_d} BLOCK_N={self.block_n} "
            f"CHUNK={self.chunk} {self.ints}"
        )


def model_flags(kernel: str) -> tuple[tuple[str, bool], ...]:
    """The switches of a Mamba block's training launch: D, z, bias and softplus on; no last-state gradient."""
    return tuple((name, name != "HAS_DLAST") for name in flag_names(kernel))


def model_variants() -> list[Variant]:
    """What a Mamba block trains with (aligned sizes, d_state 16), per kernel, architecture and dtype."""
    return [
        Variant(kernel, arch, dtype, model_flags(kernel))
        for kernel, arch, dtype in itertools.product(KERNELS, ARCHS, DTYPES)
    ]


def default_variants() -> list[Variant]:
    """The representative subset of the default test run: the model's launches on every target and dtype, plus one
    corner per kernel (every switch off, the smallest blocks, d = n = L = 1 turned into constants)."""
    corners = [
        Variant(kernel, 90, "fp32", tuple((n, False) for n in flag_names(kernel)), 1, 1, "ones") for kernel in KERNELS
    ]
    return model_variants() + corners


def full_variants(max_state: int = MAX_STATE) -> list[Variant]:
    """Every switch combination at the model's blocks for every int mode, target and dtype (:func:`flag_variants`);
    then every launchable (BLOCK_D, BLOCK_N) pair (:func:`block_variants`)."""
    return list(dict.fromkeys(flag_variants() + block_variants(max_state)))


def flag_variants() -> list[Variant]:
    """Every switch combination of each kernel, for every int mode, target and dtype, at the model's blocks."""
    out: list[Variant] = []
    for kernel in KERNELS:
        names = flag_names(kernel)
        for arch, dtype, values, ints in itertools.product(
            ARCHS, DTYPES, itertools.product((False, True), repeat=len(names)), INT_MODES
        ):
            blocks = (1, 1) if ints == "ones" else (DEFAULT_BLOCK_D, MODEL_STATE)  # d = n = 1 gives blocks of 1
            out.append(Variant(kernel, arch, dtype, tuple(zip(names, values, strict=True)), *blocks, ints))
    return out


def source_for(variant: Variant) -> triton.compiler.ASTSource:
    """The ``ASTSource`` a launch of ``variant`` would compile: signature, constexprs and divisibility attrs."""
    fn = KERNELS[variant.kernel]
    flags = dict(variant.flags)
    if set(flags) != set(flag_names(variant.kernel)):
        expected = list(flag_names(variant.kernel))
        raise ValueError(f"{variant.label}: switches {sorted(flags)} != the kernel's {expected}")
    act = variant.dtype
    constexprs: dict[str, Any] = {**flags, "CHUNK": variant.chunk, "BLOCK_D": variant.block_d}
    constexprs["BLOCK_N"] = variant.block_n
    sizes = SIZES[variant.ints]
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list] = {}
    aligned = CUDABackend.parse_attr("D")  # what the launcher attaches to a 16-divisible int / 16-aligned pointer
    for index, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            passes_u = name in OPTIONAL and not flags.get(OPTIONAL[name], True)
            signature[name] = "*" + (act if name in ACTIVATIONS or passes_u else "fp32")
            attrs[(index,)] = aligned
        elif sizes[name] == 1:  # the launcher turns an int argument equal to 1 into a constant
            signature[name], constexprs[name] = "constexpr", 1
        else:
            signature[name] = "i32"
            if sizes[name] % 16 == 0:
                attrs[(index,)] = aligned
    return triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def cuobjdump_path() -> Path | None:
    """Triton's bundled ``cuobjdump`` (reads a cubin's registers, spills and static shared memory)."""
    path = Path(triton.backends.nvidia.__file__).parent / "bin" / "cuobjdump"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def resource_usage(cubin: bytes) -> dict[str, int]:
    """Registers and the ``SHARED``, ``LOCAL`` and ``STACK`` bytes of the cubin's kernel (``cuobjdump -res-usage``)."""
    tool = cuobjdump_path()
    if tool is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        text = subprocess.run([str(tool), "-res-usage", handle.name], capture_output=True, text=True).stdout
    found = dict(re.findall(r"\b(REG|SHARED|LOCAL|STACK):(\d+)", text))
    return {key.lower(): int(value) for key, value in found.items()}


@dataclass
class Compiled:
    variant: Variant
    seconds: float
    cubin_bytes: int = 0
    shared: int = 0  # dynamic shared memory Triton asks for at launch (bytes)
    ptx_target: str = ""
    usage: dict[str, int] = field(default_factory=dict)  # registers, static shared, local (spill) and stack
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["variant"] = {**asdict(self.variant), "flags": dict(self.variant.flags), "label": self.variant.label}
        return out


def compile_variant(variant: Variant) -> Compiled:
    """Compile one variant for its target with Triton's bundled ptxas; errors are returned, not raised."""
    started = time.perf_counter()
    try:
        kernel = triton.compile(source_for(variant), target=GPUTarget("cuda", variant.arch, 32))
    except Exception as error:  # noqa: BLE001 - a failed variant is a result to report
        return Compiled(variant, time.perf_counter() - started, error=f"{type(error).__name__}: {error}"[:2000])
    seconds = time.perf_counter() - started
    cubin = kernel.asm["cubin"]
    target = re.search(r"^\.target\s+(\S+)", kernel.asm["ptx"], re.MULTILINE)
    return Compiled(
        variant,
        seconds,
        cubin_bytes=len(cubin),
        shared=int(kernel.metadata.shared),
        ptx_target=target.group(1) if target else "",
        usage=resource_usage(cubin),
    )


def problems(result: Compiled) -> list[str]:
    """What would stop the variant from launching on its target (empty when it would launch)."""
    v = result.variant
    if result.error:
        return [result.error]
    found = []
    if not result.cubin_bytes:
        found.append("empty cubin")
    if not result.ptx_target.startswith(f"sm_{v.arch}"):
        found.append(f"PTX targets {result.ptx_target!r}, not sm_{v.arch}")
    if result.shared > MAX_SHARED[v.arch]:
        found.append(f"{result.shared} B of shared memory > {MAX_SHARED[v.arch]} B on sm_{v.arch}")
    if result.usage.get("reg", 0) > MAX_REGISTERS:
        found.append(f"{result.usage['reg']} registers > {MAX_REGISTERS}")
    return found


def compile_all(variants: list[Variant], jobs: int = 1) -> Iterator[Compiled]:
    """Compile ``variants`` (in ``jobs`` worker processes when > 1), yielding results in order as they finish."""
    if jobs <= 1:
        yield from map(compile_variant, variants)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs) as pool:
        yield from pool.map(compile_variant, variants)


def block_variants(max_state: int = MAX_STATE) -> list[Variant]:
    """Every launchable (BLOCK_D, BLOCK_N) with the model's switches, aligned sizes, bf16 (register pressure)."""
    block_ds, block_ns = launchable_blocks(max_state)
    return [
        Variant(kernel, arch, "bf16", model_flags(kernel), block_d, block_n)
        for kernel, arch, block_d, block_n in itertools.product(KERNELS, ARCHS, block_ds, block_ns)
    ]


def markdown_table(results: list[dict[str, Any]]) -> list[str]:
    """Rows of :meth:`Compiled.as_dict` results as a Markdown table (spill = local + stack bytes per thread)."""
    lines = [
        "| kernel | target | dtype | switches on | BLOCK_D x BLOCK_N | sizes | registers | spill B | Triton shared B "
        "| static shared B | cubin KB | compile s |",
        "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        v, usage = r["variant"], r["usage"]
        on = "+".join(k.removeprefix("HAS_").lower() for k, value in v["flags"].items() if value) or "none"
        spill = usage.get("local", 0) + usage.get("stack", 0) if usage else "-"
        lines.append(
            f"| {v['kernel']} | sm_{v['arch']} | {v['dtype']} | {on} | {v['block_d']} x {v['block_n']} | {v['ints']} "
            f"| {usage.get('reg', '-')} | {spill} | {r['shared']} | {usage.get('shared', '-')} "
            f"| {r['cubin_bytes'] / 1024:.0f} | {r['seconds']:.1f} |"
            if not r["error"]
            else f"| {v['kernel']} | sm_{v['arch']} | {v['dtype']} | {on} | {v['block_d']} x {v['block_n']} "
            f"| {v['ints']} | failed: {r['error'][:80]} | | | | | |"
        )
    return lines


def _main() -> None:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="AOT-compile the selective-scan Triton kernels (no GPU needed)")
    sets = {"default": default_variants, "model": model_variants, "flags": flag_variants, "blocks": block_variants}
    sets["full"] = full_variants
    parser.add_argument("--set", choices=sorted(sets), default="default", help="which variants")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--json", type=Path, default=None, help="write every result to this JSON file")
    parser.add_argument("--markdown", type=Path, default=None, help="write the results as a Markdown table here")
    args = parser.parse_args()
    results = []
    for r in compile_all(sets[args.set](), args.jobs):
        results.append(r)
        usage = " ".join(f"{k}={v}" for k, v in sorted(r.usage.items()))
        status = "; ".join(problems(r)) or "ok"
        print(f"{r.variant.label}: {r.seconds:.2f}s cubin {r.cubin_bytes} B shared {r.shared} B {usage} -> {status}")
        sys.stdout.flush()
    if args.json:
        meta = {"triton": triton.__version__, "set": args.set}
        args.json.write_text(json.dumps({"meta": meta, "results": [r.as_dict() for r in results]}, indent=1))
    if args.markdown:
        head = f"Triton {triton.__version__}, `--set {args.set}`, {len(results)} variants"
        args.markdown.write_text("\n".join([head, "", *markdown_table([r.as_dict() for r in results]), ""]))
    failed = sum(bool(problems(r)) for r in results)
    print(f"{len(results) - failed} of {len(results)} variants compiled and fit their target")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    _main()
