"""Fast, differentiable pure-PyTorch selective scan for CPU (and a portable fallback anywhere).

The sequence is cut into ``nc`` chunks of ``T`` steps (``T ~ sqrt(L)``), so two short Python loops replace the
reference's ``L`` steps: ``T`` steps that advance all chunks at once on ``(b, nc, d, n)`` slices, and ``nc`` steps
that carry the true state from one chunk start to the next. The recurrence itself is one autograd node with a
hand-written backward (:mod:`.chunked_autograd`) that solves the reversed-time adjoint recurrence the same chunked
way, so autograd neither stores nor replays a dozen ``(b, d, L, n)`` intermediates. The elementwise parts around it
(softplus, ``dt * u``, ``D``, ``silu(z)``) stay in ordinary autograd here.

Only decays ``exp(dt * A) <= 1`` and their products are ever formed, never their inverses, so nothing overflows
however long the sequence or large ``dt`` is (small products underflow to 0, which is their correct value).

Why not the Mamba-2 style "T x T decay matrix" per chunk: Mamba-1 decays differ per state channel ``n``, so that
matrix is ``(b, d, n, T, T)`` per chunk -- T times the work and memory of this form.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from kernels.selective_scan.chunked_autograd import ChunkedScanFn
from kernels.selective_scan.common import discretize_dt, silu


def default_chunk_size(L: int) -> int:
    """A power of two near ``sqrt(L)`` (balances the two loops), clamped to [8, 128]."""
    return int(min(128, max(8, 2 ** round(math.log2(max(L, 1)) / 2))))


def selective_scan_chunked(
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
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as :func:`selective_scan_reference`; ``chunk_size`` defaults to :func:`default_chunk_size`."""
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    T = chunk_size or default_chunk_size(u.shape[-1])
    if T < 1:
        raise ValueError(f"selective_scan_chunked: chunk_size must be >= 1, got {T}")
    dt = discretize_dt(delta, delta_bias, delta_softplus).to(compute)  # (b, d, L)
    u_c = u.to(compute)
    y, state = ChunkedScanFn.apply(dt, dt * u_c, A.to(compute), B.to(compute), C.to(compute), T)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_c
    if z is not None:
        y = y * silu(z.to(compute))
    y = y.to(u.dtype)
    return (y, state) if return_last_state else y
