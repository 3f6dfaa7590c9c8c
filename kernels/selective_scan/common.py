"""Input checks and small elementwise helpers shared by every selective-scan backend.

Every backend accepts the same arguments (Mamba-1 layout, sequence last): ``u, delta (b, d, L)``, ``A (d, n)``,
``B, C (b, n, L)``, optional ``D, delta_bias (d,)`` and ``z (b, d, L)``. Checking them once here keeps the error
messages identical whichever backend runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def softplus(x: Tensor) -> Tensor:
    """``log(1 + exp(x))`` without overflow for large ``x`` (``logaddexp`` is stable and differentiable)."""
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


def silu(x: Tensor) -> Tensor:
    """``x * sigmoid(x)``."""
    return x * torch.sigmoid(x)


def discretize_dt(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    """The step size ``dt = softplus(delta + delta_bias)`` (bias and softplus optional), in float32 or wider."""
    dt = delta.float() if delta.dtype != torch.float64 else delta
    if delta_bias is not None:
        dt = dt + delta_bias.to(dt.dtype)[:, None]  # (b, d, L) + (d, 1)
    return softplus(dt) if delta_softplus else dt


def _shape_error(name: str, got: tuple[int, ...], want: str) -> ValueError:
    return ValueError(f"selective_scan: {name} has shape {tuple(got)}, expected {want}; fix the caller's layout")


def check_scan_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
) -> None:
    """Raise a one-line ValueError naming the first argument whose shape, dtype or device is wrong."""
    if u.ndim != 3:
        raise _shape_error("u", u.shape, "(batch, d, L)")
    b, d, L = u.shape
    if L == 0:
        raise ValueError("selective_scan: sequence length L is 0; pass at least one time step")
    if A.ndim != 2 or A.shape[0] != d:
        raise _shape_error("A", A.shape, f"({d}, d_state)")
    n = A.shape[1]
    expected = {
        "delta": (delta, (b, d, L)),
        "B": (B, (b, n, L)),
        "C": (C, (b, n, L)),
        "D": (D, (d,)),
        "z": (z, (b, d, L)),
        "delta_bias": (delta_bias, (d,)),
    }
    for name, (tensor, shape) in expected.items():
        if tensor is not None and tuple(tensor.shape) != shape:
            raise _shape_error(name, tensor.shape, str(shape))
    named = {"u": u, "A": A, **{k: v for k, (v, _) in expected.items()}}
    for name, tensor in named.items():
        if tensor is None:
            continue
        if tensor.dtype not in FLOAT_DTYPES:
            raise ValueError(f"selective_scan: {name} has dtype {tensor.dtype}; pass float32, float16 or bfloat16")
        if tensor.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {tensor.device} but u is on {u.device}; move it there")
