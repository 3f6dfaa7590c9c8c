"""Mamba-1 selective scan: one entry point, three interchangeable backends, and a single recurrent step.

- ``reference``: sequential PyTorch loop, the oracle (:mod:`.reference`).
- ``chunked``: chunked pure-PyTorch scan, differentiable and overflow-free, the CPU default (:mod:`.chunked`).
- ``triton``: forward/backward Triton kernels with chunk-boundary checkpointing, the CUDA default
  (:mod:`.triton_scan`); on CPU it runs only under ``TRITON_INTERPRET=1`` (that is how CI tests it).

``selective_scan_step`` advances one time step for recurrent decoding.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from torch import Tensor

from kernels.selective_scan.chunked import selective_scan_chunked
from kernels.selective_scan.common import check_scan_inputs, discretize_dt, silu
from kernels.selective_scan.reference import selective_scan_reference

__all__ = ["BACKENDS", "resolve_backend", "selective_scan", "selective_scan_step"]

BACKENDS = ("auto", "reference", "chunked", "triton")
logger = logging.getLogger(__name__)
_logged_choices: set[tuple[str, str]] = set()


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(device: torch.device | str, backend: str = "auto") -> str:
    """The backend ``selective_scan`` will use for tensors on ``device``: ``auto`` is triton on CUDA, else chunked."""
    if backend not in BACKENDS:
        raise ValueError(f"selective_scan: unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    device = torch.device(device)
    if backend == "auto":
        return "triton" if device.type == "cuda" and _triton_available() else "chunked"
    if backend == "triton":
        if not _triton_available():
            raise ValueError("selective_scan: backend 'triton' needs the triton package; install it or use 'chunked'")
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"selective_scan: backend 'triton' needs CUDA tensors (got {device.type}); "
                "use 'chunked', or set TRITON_INTERPRET=1 before importing triton"
            )
    return backend


def selective_scan(
    u: Tensor,  # (b, d, L)
    delta: Tensor,  # (b, d, L)
    A: Tensor,  # (d, n)
    B: Tensor,  # (b, n, L)
    C: Tensor,  # (b, n, L)
    D: Tensor | None = None,  # (d,)
    z: Tensor | None = None,  # (b, d, L)
    delta_bias: Tensor | None = None,  # (d,)
    delta_softplus: bool = False,
    return_last_state: bool = False,
    backend: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Mamba-1 selective scan; returns ``y (b, d, L)`` in u's dtype, or ``(y, last_state (b, d, n) float32)``.

    ``dt = softplus(delta + delta_bias)`` (bias/softplus optional); ``h_t = exp(dt_t A) h_{t-1} + dt_t B_t u_t``
    per channel; ``y_t = <C_t, h_t> + D u_t``; then ``y * silu(z)`` if ``z`` is given. State accumulates in float32.
    """
    check_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    chosen = resolve_backend(u.device, backend)
    if (backend, chosen) not in _logged_choices:
        _logged_choices.add((backend, chosen))
        logger.info("selective_scan: backend %r resolved to %r on %s", backend, chosen, u.device.type)
    kwargs = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, return_last_state=return_last_state)
    if chosen == "triton":
        from kernels.selective_scan.triton_scan import selective_scan_triton as scan
    else:
        scan = selective_scan_reference if chosen == "reference" else selective_scan_chunked
    # Under autocast the backends' own float32 matmuls would run in bf16/fp16 and save half-precision state for a
    # backward that runs without autocast (mixed dtypes there); each backend already picks its compute dtype.
    with _autocast_off(u.device.type):
        return scan(u, delta, A, B, C, **kwargs)


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def selective_scan_step(
    h: Tensor,  # (b, d, n) float32 state
    u_t: Tensor,  # (b, d)
    delta_t: Tensor,  # (b, d)
    A: Tensor,  # (d, n)
    B_t: Tensor,  # (b, n)
    C_t: Tensor,  # (b, n)
    D: Tensor | None = None,  # (d,)
    z_t: Tensor | None = None,  # (b, d)
    delta_bias: Tensor | None = None,  # (d,)
    delta_softplus: bool = False,
) -> tuple[Tensor, Tensor]:
    """One recurrent step for decoding: returns ``(y_t (b, d) in u_t's dtype, h_new (b, d, n) in h's dtype)``."""
    if h.ndim != 3 or u_t.shape != h.shape[:2] or A.shape != h.shape[1:]:
        raise ValueError(
            f"selective_scan_step: got h {tuple(h.shape)}, u_t {tuple(u_t.shape)}, A {tuple(A.shape)}; "
            "expected h (b, d, n), u_t (b, d), A (d, n)"
        )
    compute = h.dtype
    dt = discretize_dt(delta_t[..., None], delta_bias, delta_softplus)[..., 0].to(compute)  # (b, d)
    u_c = u_t.to(compute)
    h_new = torch.exp(dt[..., None] * A.to(compute)) * h + (dt * u_c)[..., None] * B_t.to(compute)[:, None, :]
    y = (h_new * C_t.to(compute)[:, None, :]).sum(-1)  # (b, d)
    if D is not None:
        y = y + D.to(compute) * u_c
    if z_t is not None:
        y = y * silu(z_t.to(compute))
    return y.to(u_t.dtype), h_new
