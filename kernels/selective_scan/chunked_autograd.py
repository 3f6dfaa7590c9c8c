"""The core linear recurrence of the selective scan as one autograd node with a hand-written, chunked backward.

Core problem (float32/float64 in, all shapes Mamba-1 layout, sequence last)::

    h_t = exp(dt_t A) * h_{t-1} + dtu_t * B_t        (b, d, n) per step, h_{-1} = 0
    y_t = <C_t, h_t>_n                                (b, d)

Everything elementwise around it (softplus, ``dt * u``, ``D``, ``silu(z)``) stays in ordinary autograd in
:mod:`.chunked`; only this part is worth hand-writing, because autograd through it would store and replay a dozen
``(b, d, L, n)`` intermediates.

Working layout ``(T, b, nc, d, n)``: the sequence is cut into ``nc`` chunks of ``T`` steps, and step-within-chunk
leads, so the two Python loops over ``T`` touch one contiguous ``(b, nc, d, n)`` slice per step (all chunks at
once), while ``(d, n)`` trail, so every reduction over ``n`` or ``d`` is a batched matmul with no temporary.

Forward: local scans from a zero state in every chunk (``T`` steps), then the true chunk-start states by a carry
over ``nc`` chunk ends, then ``h += P * h_start`` with ``P`` the decay since chunk start (a cumprod of decays).

Backward: the adjoint ``g_t = dLoss/dh_t`` obeys the same recurrence reversed in time,
``g_t = exp(dt_{t+1} A) g_{t+1} + C_t dy_t`` (plus ``dLoss/dh_last`` at the end), solved the same chunked way
(local reverse scans, a reverse carry, a fix-up with the decay to chunk end). Then
``d dtu = <g, B>_n``, ``dB = <g, dtu>_d``, ``dC = <dy, h>_d`` and, with ``s = g * exp(dt A) * h_{t-1}``,
``d dt = <s, A>_n`` and ``dA = sum s * dt``.

Only products of decays ``exp(dt A) <= 1`` are formed, never their inverses, so long sequences with large ``dt``
cannot overflow (tiny products underflow to 0, their correct value).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from kernels.selective_scan.workspace import give_back, lease, scratch

SAVE_STATES_MAX_BYTES = 64 << 20  # keep decays + states for the backward up to this size per call, else recompute


def to_steps(v: Tensor, T: int) -> Tensor:
    """``(b, c, nc * T) -> (T, b, nc, c)`` contiguous: step-within-chunk first, channels last."""
    b, c, Lp = v.shape
    return v.reshape(b, c, Lp // T, T).permute(3, 0, 2, 1).contiguous()


def from_steps(s: Tensor) -> Tensor:
    """``(T, b, nc, c) -> (b, c, nc * T)``, the inverse of :func:`to_steps`."""
    T, b, nc, c = s.shape
    return s.permute(1, 3, 2, 0).reshape(b, c, nc * T)


def _pad(v: Tensor, pad: int) -> Tensor:
    """Zero-pad the last (time) axis; padded steps have dt = 0, hence decay 1 and no input: the state is unchanged."""
    return torch.cat([v, v.new_zeros(*v.shape[:-1], pad)], dim=-1) if pad else v


def reduce_n(x: Tensor, v: Tensor) -> Tensor:
    """``(..., d, n), (..., n) -> (..., d)``: sum over n of ``x * v``, as ``v^T x^T`` (BLAS's fast orientation)."""
    return torch.matmul(v[..., None, :], x.transpose(-1, -2))[..., 0, :]


def chunk_decays(dt_s: Tensor, A: Tensor, out: Tensor) -> Tensor:
    """``exp(dt_t A)`` for every step into ``out`` ``(T, b, nc, d, n)``: the per-step decays, in (0, 1]."""
    torch.mul(dt_s[..., None], A, out=out)
    return out.exp_()


def carry_forward(end: Tensor, chunk_decay: Tensor, first: Tensor, out: Tensor) -> Tensor:
    """``out[c + 1] = end[:, c] + chunk_decay[:, c] * out[c]`` from ``out[0] = first``; returns the value after the last
    chunk. ``end``, ``chunk_decay`` are ``(b, nc, d, n)``, ``out`` is ``(nc, b, d, n)`` (one contiguous slice per step).
    """
    nc = out.shape[0]
    out[0] = first
    for c in range(nc - 1):
        torch.addcmul(end[:, c], chunk_decay[:, c], out[c], out=out[c + 1])
    return torch.addcmul(end[:, nc - 1], chunk_decay[:, nc - 1], out[nc - 1])


def states_from_starts(hs: Tensor, starts: Tensor, decay: Tensor, dtu_s: Tensor, B_s: Tensor) -> None:
    """Fill ``hs (T + 1, b, nc, d, n)`` with every chunk's states from its start state (``starts (nc, b, d, n)``):
    ``hs[0]`` the chunk start, ``hs[j + 1]`` the state after step j. The forward's pass 2, op for op."""
    hs[0] = starts.transpose(0, 1)
    torch.mul(dtu_s[..., None], B_s[..., None, :], out=hs[1:])  # input term dt * u * B
    for j in range(decay.shape[0]):
        hs[j + 1].addcmul_(decay[j], hs[j])


class ChunkedScanFn(torch.autograd.Function):
    """``(dt, dtu (b, d, L), A (d, n), B, C (b, n, L), T) -> (y (b, d, L), last state (b, d, n))``.

    For its backward it keeps the inputs in step layout and the chunk-start states ``(nc, b, d, n)``, and the
    per-step decays and states (``(T, b, nc, d, n)`` each) only while both fit in ``SAVE_STATES_MAX_BYTES``: those
    are leased buffers (:mod:`.workspace`), returned for reuse once the backward has run, so repeated calls
    (layers, training steps) neither allocate nor page-fault them afresh. Above the limit (long sequences) the
    backward recomputes them from the chunk starts into scratch buffers: one more forward's work, for memory that
    no longer grows with the number of layers.
    """

    @staticmethod
    def forward(ctx: Any, dt: Tensor, dtu: Tensor, A: Tensor, B: Tensor, C: Tensor, T: int) -> tuple[Tensor, Tensor]:
        batch, d, L = dt.shape
        n = A.shape[1]
        nc = -(-L // T)
        pad = nc * T - L
        dt_s, dtu_s = to_steps(_pad(dt, pad), T), to_steps(_pad(dtu, pad), T)  # (T, b, nc, d)
        B_s, C_s = to_steps(_pad(B, pad), T), to_steps(_pad(C, pad), T)  # (T, b, nc, n)

        shapes = [(T, batch, nc, d, n), (T + 1, batch, nc, d, n)]
        keep = any(ctx.needs_input_grad) and (2 * T + 1) * batch * nc * d * n * dt.element_size() <= (
            SAVE_STATES_MAX_BYTES
        )
        held = lease(shapes, dt) if keep else None
        decay, hs = held.views if held else (scratch(0, shapes[0], dt), scratch(1, shapes[1], dt))
        chunk_decays(dt_s, A, decay)
        chunk_decay = torch.exp(dt_s.sum(0)[..., None] * A)  # (b, nc, d, n): decay over a whole chunk
        torch.mul(dtu_s[..., None], B_s[..., None, :], out=hs[1:])  # hs[j + 1] = input term dt * u * B of step j
        end = hs[1].clone()  # pass 1: every chunk's end state from a zero start (small buffer, no stores)
        for j in range(1, T):
            torch.addcmul(hs[j + 1], decay[j], end, out=end)
        starts = end.new_empty(nc, batch, d, n)  # carry the true state across chunk boundaries
        state = carry_forward(end, chunk_decay, end.new_zeros(()), starts)
        hs[0] = starts.transpose(0, 1)
        for j in range(T):  # pass 2: the true states (hs[j + 1] after step j), overwriting the input terms
            hs[j + 1].addcmul_(decay[j], hs[j])

        y_s = reduce_n(hs[1:], C_s)  # (T, b, nc, d): <h_t, C_t> over n
        ctx.save_for_backward(A, dt_s, dtu_s, B_s, C_s, starts, chunk_decay)
        ctx.shape, ctx.lease = (L, pad), held
        if held is not None:  # back to the free list when the graph goes, should no backward ever run
            weakref.finalize(ctx, give_back, held)
        return from_steps(y_s)[..., :L], state

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dy: Tensor, dlast: Tensor) -> tuple[Tensor | None, ...]:
        A, dt_s, dtu_s, B_s, C_s, starts, chunk_decay = ctx.saved_tensors
        L, pad = ctx.shape
        T, batch, nc, d = dt_s.shape
        n = A.shape[1]
        kept = ctx.lease.claim() if ctx.lease is not None else None  # None again in a second backward
        if kept is not None:
            decay, hs = kept
        else:  # recompute, exactly as the forward did
            decay = chunk_decays(dt_s, A, scratch(0, (T, batch, nc, d, n), dt_s))
            hs = scratch(1, (T + 1, batch, nc, d, n), dt_s)
            states_from_starts(hs, starts, decay, dtu_s, B_s)
        try:
            return _backward(A, dt_s, dtu_s, B_s, C_s, chunk_decay, decay, hs, dy, dlast, L, pad)
        finally:
            if kept is not None:
                give_back(ctx.lease)


def _backward(
    A: Tensor,
    dt_s: Tensor,
    dtu_s: Tensor,
    B_s: Tensor,
    C_s: Tensor,
    chunk_decay: Tensor,
    decay: Tensor,
    hs: Tensor,
    dy: Tensor,
    dlast: Tensor,
    L: int,
    pad: int,
) -> tuple[Tensor | None, ...]:
    """The backward given the decays and states (both overwritten: ``decay`` ends up holding ``exp(dt A) h_{t-1}``)."""
    T, batch, nc, d, n = decay.shape
    dy_s = to_steps(_pad(dy, pad), T)  # (T, b, nc, d)
    g = scratch(2, (T, batch, nc, d, n), dt_s)  # becomes the adjoint dLoss/dh_t
    torch.mul(dy_s[..., None], C_s[..., None, :], out=g)  # direct term C_t dy_t
    local = g[T - 1].clone()  # pass 1: each chunk's adjoint at its first step, from a zero end (small buffer)
    for j in range(T - 2, -1, -1):
        torch.addcmul(g[j], decay[j + 1], local, out=local)
    start = local.mul_(decay[0])  # (b, nc, d, n): what flows out of each chunk into the previous one
    # Adjoint reaching each chunk's last step from later chunks: the forward carry run backwards in chunk order.
    inflow = start.new_empty(nc, batch, d, n)
    carry_forward(start.flip(1), chunk_decay.flip(1), dlast, inflow)
    g[T - 1] += inflow.flip(0).transpose(0, 1)
    for j in range(T - 2, -1, -1):  # pass 2: the true adjoint, in place
        g[j].addcmul_(decay[j + 1], g[j + 1])

    d_dtu_s = reduce_n(g, B_s)  # (T, b, nc, d)
    dB_s = torch.matmul(dtu_s[..., None, :], g)[..., 0, :]  # (T, b, nc, n)
    dC_s = torch.matmul(dy_s[..., None, :], hs[1:])[..., 0, :]  # (T, b, nc, n)
    g.mul_(torch.mul(decay, hs[:-1], out=decay))  # s = g * exp(dt A) h_{t-1} = dLoss/d(dt A), elementwise
    d_dt_s = torch.matmul(A[:, None, :], g.view(-1, d, n).permute(1, 2, 0))  # (d, 1, T * b * nc)
    d_dt_s = d_dt_s.reshape(d, T, batch, nc).permute(1, 2, 3, 0)  # (T, b, nc, d): <s, A>_n
    dA = (g.new_ones(1, T * batch * nc) @ g.mul_(dt_s[..., None]).view(-1, d * n)).view(d, n)  # sum over steps

    d_dt, d_dtu, dB, dC = (from_steps(s)[..., :L] for s in (d_dt_s, d_dtu_s, dB_s, dC_s))  # drop padding
    return d_dt, d_dtu, dA, dB, dC, None
