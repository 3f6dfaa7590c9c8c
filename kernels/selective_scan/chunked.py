"""Fast, differentiable pure-PyTorch selective scan for CPU (and a portable fallback anywhere).

The sequence is cut into ``nc`` chunks of ``T`` steps. Two short Python loops replace the reference's ``L`` steps:

1. *Within* chunks, all chunks at once: ``T`` steps of the recurrence started from a zero state, each step working
   on a ``(b, d, nc, n)`` slice, giving every chunk's local states.
2. *Across* chunks: ``nc`` steps carrying the true state from one chunk start to the next:
   ``h_start[c+1] = P[c] * h_start[c] + h_local[c, T-1]``.

The true state is then ``h_t = h_local_t + P_t * h_start[c]`` where ``P_t = exp(dt_1 A) ... exp(dt_t A)`` is the
decay since the chunk start, built in the same inner loop. Only decays (``exp(dt * A) <= 1``) are ever multiplied,
never their inverses, so nothing overflows however long the sequence or large ``dt`` is (small products underflow to
0, which is their correct value). With ``T ~ sqrt(L)`` the loop count is ``~2 sqrt(L)``. Time-within-chunk leads the
working layout ``(T, b, d, nc, n)`` so each inner step touches one contiguous slice.

Why not the Mamba-2 style "T x T decay matrix" per chunk: Mamba-1 decays differ per state channel ``n``, so that
matrix is ``(b, d, n, T, T)`` per chunk -- T times the work and memory of this form.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

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
    batch, d, L = u.shape
    n = A.shape[1]
    T = chunk_size or default_chunk_size(L)
    if T < 1:
        raise ValueError(f"selective_scan_chunked: chunk_size must be >= 1, got {T}")
    nc = -(-L // T)
    pad = nc * T - L

    dt = discretize_dt(delta, delta_bias, delta_softplus).to(compute)  # (b, d, L)
    u_c = u.to(compute)
    dtu = dt * u_c  # (b, d, L)
    B_c, C_c = B.to(compute), C.to(compute)  # (b, n, L)
    if pad:
        # Padded steps have dt = 0: decay 1 and no input, so they leave the state (and the last state) unchanged.
        dt = torch.cat([dt, dt.new_zeros(batch, d, pad)], dim=-1)
        dtu = torch.cat([dtu, dtu.new_zeros(batch, d, pad)], dim=-1)
        B_c = torch.cat([B_c, B_c.new_zeros(batch, n, pad)], dim=-1)
        C_c = torch.cat([C_c, C_c.new_zeros(batch, n, pad)], dim=-1)

    to_steps = lambda v: v.reshape(*v.shape[:-1], nc, T).movedim(-1, 0).contiguous()  # (..., L) -> (T, ..., nc)
    dt_s, dtu_s = to_steps(dt)[..., None], to_steps(dtu)[..., None]  # (T, b, d, nc, 1)
    B_s = to_steps(B_c).transpose(-1, -2).contiguous()[:, :, None]  # (T, b, 1, nc, n)
    C_s = to_steps(C_c).transpose(-1, -2).contiguous()[:, :, None]  # (T, b, 1, nc, n)
    log_decay = dt_s * A.to(compute)[:, None, :]  # (T, b, d, nc, n), <= 0
    x = dtu_s * B_s  # (T, b, d, nc, n): input term dt * B * u

    h = torch.zeros(batch, d, nc, n, dtype=compute, device=u.device)
    decay_since_start = torch.ones_like(h)
    local, since_start = [], []
    for a_j, x_j in zip(torch.exp(log_decay).unbind(0), x.unbind(0), strict=True):  # T steps, all chunks at once
        h = a_j * h + x_j  # (b, d, nc, n): state from a zero start at the chunk boundary
        decay_since_start = a_j * decay_since_start  # products of decays <= 1: no overflow
        local.append(h)
        since_start.append(decay_since_start)
    h_local, from_start = torch.stack(local), torch.stack(since_start)  # (T, b, d, nc, n)

    state = torch.zeros(batch, d, n, dtype=compute, device=u.device)
    starts = []
    # Carry the true state across chunk boundaries; unbind once so autograd stacks the gradients once, too.
    for chunk_decay, chunk_end in zip(decay_since_start.unbind(dim=2), h.unbind(dim=2), strict=True):
        starts.append(state)
        state = chunk_decay * state + chunk_end  # h is now each chunk's local end state (b, d, nc, n)
    h_start = torch.stack(starts, dim=2)  # (b, d, nc, n)

    y = ((h_local + from_start * h_start) * C_s).sum(-1)  # (T, b, d, nc)
    y = y.movedim(0, -1).reshape(batch, d, nc * T)[..., :L]  # (b, d, L)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_c
    if z is not None:
        y = y * silu(z.to(compute))
    y = y.to(u.dtype)
    return (y, state) if return_last_state else y
