"""The whole chunked selective scan as one autograd node with a hand-written, chunked backward.

Core problem (float32/float64 inside, shapes in Mamba-1 layout, sequence last)::

    dt_t = softplus(delta_t + delta_bias)             (b, d) per step (bias and softplus optional)
    h_t = exp(dt_t A) * h_{t-1} + dt_t u_t * B_t      (b, d, n) per step, h_{-1} = 0
    y_t = (<C_t, h_t>_n + D u_t) * silu(z_t)          (b, d) (D and z optional)

The elementwise parts are in this node too, with their derivatives written out: as separate autograd nodes they
cost a dozen extra passes and fresh ``(b, d, L)`` tensors per call, a tenth of the whole scan's time.

Working layout ``(T, b, nc, d, n)``: the sequence is cut into ``nc`` chunks of ``T`` steps, and step-within-chunk
leads, so the two Python loops over ``T`` touch one contiguous ``(b, nc, d, n)`` slice per step (all chunks at
once), while ``(d, n)`` trail, so every reduction over ``n`` or ``d`` is a batched matmul with no temporary.

Forward: local scans from a zero state in every chunk (``T`` steps; only each chunk's end state is kept), then the
true chunk-start states by a carry over the ``nc`` chunk ends, then the true states step by step from the starts.

Backward: the adjoint ``g_t = dLoss/dh_t`` obeys the same recurrence reversed in time,
``g_t = exp(dt_{t+1} A) g_{t+1} + C_t dy_t`` (plus ``dLoss/dh_last`` at the end), solved the same chunked way
(local reverse scans, a reverse carry, the true adjoint from the chunk ends). Then
``d dtu = <g, B>_n``, ``dB = <g, dtu>_d``, ``dC = <dy, h>_d`` and, with ``s = g * exp(dt A) * h_{t-1}``,
``d dt = <s, A>_n`` and ``dA = sum s * dt``.

Memory: the decays and states (``(T, b, nc, d, n)`` each) are kept for the backward in leased buffers that return
to a free list after it (:mod:`.workspace`), so repeated calls -- layers, training steps -- reuse them without
page faults; above ``SAVE_STATES_MAX_BYTES`` per call only the chunk-start states are kept and the backward
recomputes the rest (one more forward's work, memory that no longer grows with the number of layers).

Only products of decays ``exp(dt A) <= 1`` are formed, never their inverses, so long sequences with large ``dt``
cannot overflow (tiny products underflow to 0, their correct value).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from kernels.selective_scan.common import softplus as softplus_fn
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


def recurrence_forward(
    dt_s: Tensor, dtu_s: Tensor, A: Tensor, B_s: Tensor, C_s: Tensor, decay: Tensor, hs: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(y_s (T, b, nc, d), last state, chunk starts (nc, b, d, n), chunk decays (b, nc, d, n))``; fills
    ``decay (T, b, nc, d, n)`` with the per-step decays and ``hs (T + 1, b, nc, d, n)`` with the states."""
    T, batch, nc, d = dt_s.shape
    n = A.shape[1]
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
    return reduce_n(hs[1:], C_s), state, starts, chunk_decay


def saved_tensor_hooks_active() -> bool:
    """Whether saved tensors currently go through hooks (activation checkpointing, offloading, measurements); then
    decays and states must be ordinary saved tensors so the hooks see them. True when PyTorch cannot tell."""
    probe = getattr(torch._C._autograd, "_top_saved_tensors_default_hooks", None)
    return probe is None or probe(False) is not None


def recurrence_backward(
    A: Tensor,
    dt_s: Tensor,
    dtu_s: Tensor,
    B_s: Tensor,
    C_s: Tensor,
    chunk_decay: Tensor,
    decay: Tensor,
    hs: Tensor,
    dy_s: Tensor,
    dlast: Tensor,
    q: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(d dt, d dtu, dA, dB, dC)`` in step layout, given the decays and states; ``q`` (may be ``decay`` itself)
    receives ``exp(dt A) h_{t-1}``. Nothing else given is written to."""
    T, batch, nc, d, n = decay.shape
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
    g.mul_(torch.mul(decay, hs[:-1], out=q))  # s = g * exp(dt A) h_{t-1} = dLoss/d(dt A), elementwise
    d_dt_s = torch.matmul(A[:, None, :], g.view(-1, d, n).permute(1, 2, 0))  # (d, 1, T * b * nc)
    d_dt_s = d_dt_s.reshape(d, T, batch, nc).permute(1, 2, 3, 0)  # (T, b, nc, d): <s, A>_n
    dA = (g.new_ones(1, T * batch * nc) @ g.mul_(dt_s[..., None]).view(-1, d * n)).view(d, n)  # sum over steps
    return d_dt_s, d_dtu_s, dA, dB_s, dC_s


class ChunkedScanFn(torch.autograd.Function):
    """``(u, delta, A, B, C, D, z, delta_bias, delta_softplus, T) -> (y (b, d, L), last state (b, d, n))``, both
    in the compute dtype (float64 for float64 ``u``, else float32); ``D``, ``z``, ``delta_bias`` may be None."""

    @staticmethod
    def forward(
        ctx: Any,
        u: Tensor,
        delta: Tensor,
        A: Tensor,
        B: Tensor,
        C: Tensor,
        D: Tensor | None,
        z: Tensor | None,
        delta_bias: Tensor | None,
        delta_softplus: bool,
        T: int,
    ) -> tuple[Tensor, Tensor]:
        compute = torch.float64 if u.dtype == torch.float64 else torch.float32
        batch, d, L = u.shape
        n = A.shape[1]
        nc = -(-L // T)
        pad = nc * T - L
        x = delta.to(compute)  # the pre-activation of dt
        if delta_bias is not None:
            x = x + delta_bias.to(compute)[:, None]
        dt = softplus_fn(x) if delta_softplus else x
        dt_s, u_s = to_steps(_pad(dt, pad), T), to_steps(_pad(u.to(compute), pad), T)  # (T, b, nc, d)
        B_s, C_s = to_steps(_pad(B.to(compute), pad), T), to_steps(_pad(C.to(compute), pad), T)  # (T, b, nc, n)
        dtu_s = dt_s * u_s
        A_c = A.to(compute)
        shapes = [(T, batch, nc, d, n), (T + 1, batch, nc, d, n)]
        state_bytes = (2 * T + 1) * batch * nc * d * n * dt_s.element_size()
        keep = any(ctx.needs_input_grad) and state_bytes <= SAVE_STATES_MAX_BYTES
        held, saved = None, (None, None)
        if not keep:  # the backward recomputes them
            decay, hs = scratch(0, shapes[0], dt_s), scratch(1, shapes[1], dt_s)
        elif saved_tensor_hooks_active():  # ordinary saved tensors, for the hooks to see (checkpointing drops them)
            decay, hs = saved = (dt_s.new_empty(shapes[0]), dt_s.new_empty(shapes[1]))
        else:  # leased: back to the free list after the backward
            held = lease(shapes, dt_s)
            decay, hs = held.views
        y_s, state, starts, chunk_decay = recurrence_forward(dt_s, dtu_s, A_c, B_s, C_s, decay, hs)
        D_c = D.to(compute) if D is not None else None
        if D_c is not None:
            y_s.addcmul_(D_c, u_s)
        y = from_steps(y_s)[..., :L]  # before the gate
        z_c = z.to(compute) if z is not None else None
        out = y * (z_c * torch.sigmoid(z_c)) if z_c is not None else y
        kept_y, kept_x = (y if z_c is not None else None), (x if delta_softplus else None)
        ctx.save_for_backward(A_c, dt_s, u_s, dtu_s, B_s, C_s, starts, chunk_decay, D_c, z_c, kept_y, kept_x, *saved)
        ctx.shape, ctx.lease, ctx.softplus = (L, pad), held, delta_softplus
        ctx.dtypes = tuple(t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z, delta_bias))
        if held is not None:  # back to the free list when the graph goes, should no backward ever run
            weakref.finalize(ctx, give_back, held)
        return out, state

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dout: Tensor, dlast: Tensor) -> tuple[Tensor | None, ...]:
        A, dt_s, u_s, dtu_s, B_s, C_s, starts, chunk_decay, D, z, y, x, saved_decay, saved_hs = ctx.saved_tensors
        L, pad = ctx.shape
        T, batch, nc, d = dt_s.shape
        n = A.shape[1]
        dz = None
        if z is not None:  # out = y * z * sigmoid(z)
            sig = torch.sigmoid(z)
            dz = dout * y * sig * (1 + z * (1 - sig))
            dout = dout * (z * sig)
        dy_s = to_steps(_pad(dout, pad), T)  # (T, b, nc, d): dLoss/dy before the gate
        kept = ctx.lease.claim() if ctx.lease is not None else None  # None again in a second backward
        if saved_decay is not None:  # read-only: a retained graph's next backward reads them again
            decay, hs, q = saved_decay, saved_hs, scratch(0, saved_decay.shape, dt_s)
        elif kept is not None:  # ours alone until given back
            decay, hs = kept
            q = decay
        else:  # recompute, exactly as the forward did
            decay = q = chunk_decays(dt_s, A, scratch(0, (T, batch, nc, d, n), dt_s))
            hs = scratch(1, (T + 1, batch, nc, d, n), dt_s)
            states_from_starts(hs, starts, decay, dtu_s, B_s)
        try:
            d_dt_s, d_dtu_s, dA, dB_s, dC_s = recurrence_backward(
                A, dt_s, dtu_s, B_s, C_s, chunk_decay, decay, hs, dy_s, dlast, q
            )
        finally:
            if kept is not None:
                give_back(ctx.lease)
        d_dt_s.addcmul_(d_dtu_s, u_s)  # dtu = dt * u
        du_s = d_dtu_s.mul_(dt_s)
        dD = None
        if D is not None:  # y += D * u
            du_s.addcmul_(dy_s, D)
            dD = (dy_s * u_s).sum((0, 1, 2))
        du, d_dt, dB, dC = (from_steps(s)[..., :L] for s in (du_s, d_dt_s, dB_s, dC_s))  # drop padding
        d_x = d_dt * torch.sigmoid(x) if ctx.softplus else d_dt  # softplus' = sigmoid
        d_bias = d_x.sum((0, 2)) if ctx.needs_input_grad[7] else None
        grads = (du, d_x, dA, dB, dC, dD, dz, d_bias)
        cast = tuple(
            g.to(dtype) if g is not None and need else None
            for g, dtype, need in zip(grads, ctx.dtypes, ctx.needs_input_grad, strict=False)
        )
        return (*cast, None, None)
