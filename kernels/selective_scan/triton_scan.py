"""Autograd wrapper around the Triton selective-scan kernels (:mod:`.triton_kernels`).

Import this module only when the Triton backend is wanted: Triton decides between compiled and interpreted kernels
(``TRITON_INTERPRET=1``) when the kernels are decorated, i.e. at import time.
"""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from kernels.selective_scan.triton_kernels import selective_scan_bwd_kernel, selective_scan_fwd_kernel

DEFAULT_CHUNK = 64
DEFAULT_BLOCK_D = 32


def _launch_config(dim: int, n_state: int, block_d: int) -> tuple[int, int, int]:
    block_d = min(block_d, triton.next_power_of_2(dim))
    return block_d, triton.next_power_of_2(n_state), triton.cdiv(dim, block_d)


class SelectiveScanTriton(torch.autograd.Function):
    """``(y, last_state)`` from Triton kernels; backward recomputes states chunk by chunk from checkpoints."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, block_d):
        u, delta, A, B, C = (x.contiguous() for x in (u, delta, A, B, C))
        D, z, delta_bias = (x.contiguous() if x is not None else None for x in (D, z, delta_bias))
        batch, dim, L = u.shape
        n_state = A.shape[1]
        n_chunks = triton.cdiv(L, chunk_size)
        block_d, block_n, n_dblocks = _launch_config(dim, n_state, block_d)
        y = torch.empty_like(u)
        states = torch.empty(batch, dim, n_state, n_chunks, device=u.device, dtype=torch.float32)
        last = torch.empty(batch, dim, n_state, device=u.device, dtype=torch.float32)
        selective_scan_fwd_kernel[(batch, n_dblocks)](
            u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
            delta_bias if delta_bias is not None else u,
            y, states, last, dim, L, n_state, n_chunks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            CHUNK=chunk_size, BLOCK_D=block_d, BLOCK_N=block_n,
        )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, states)
        ctx.set_materialize_grads(False)  # an unused last state arrives as None: the kernel then skips loading it
        ctx.config = (delta_softplus, chunk_size, block_d)
        return y, last

    @staticmethod
    def backward(ctx, dy, dlast):
        u, delta, A, B, C, D, z, delta_bias, states = ctx.saved_tensors
        delta_softplus, chunk_size, block_d = ctx.config
        batch, dim, L = u.shape
        n_state = A.shape[1]
        n_chunks = states.shape[-1]
        block_d, block_n, n_dblocks = _launch_config(dim, n_state, block_d)
        f32 = dict(device=u.device, dtype=torch.float32)
        dy = dy.contiguous() if dy is not None else torch.zeros_like(u)
        scratch = torch.empty(batch, dim, n_state, chunk_size, **f32)
        du, ddelta, dz = (torch.empty(batch, dim, L, **f32) for _ in range(3))
        dA = torch.empty(batch, dim, n_state, **f32)  # per-batch partials
        dD = torch.empty(batch, dim, **f32)
        dB = torch.empty(batch, n_dblocks, n_state, L, **f32)  # per-channel-block partials
        dC = torch.empty(batch, n_dblocks, n_state, L, **f32)
        selective_scan_bwd_kernel[(batch, n_dblocks)](
            u, delta, A, B, C, D if D is not None else u, z if z is not None else u,
            delta_bias if delta_bias is not None else u, dy, states, dlast.contiguous() if dlast is not None else u,
            scratch, du, ddelta, dz, dA, dD, dB, dC, dim, L, n_state, n_chunks, n_dblocks,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=delta_softplus,
            HAS_DLAST=dlast is not None, CHUNK=chunk_size, BLOCK_D=block_d, BLOCK_N=block_n,
        )  # fmt: skip
        grads = (
            du.to(u.dtype),
            ddelta.to(delta.dtype),
            dA.sum(0).to(A.dtype),
            dB.sum(1).to(B.dtype),
            dC.sum(1).to(C.dtype),
            dD.sum(0).to(D.dtype) if D is not None else None,
            dz.to(z.dtype) if z is not None else None,
            ddelta.sum((0, 2)).to(delta_bias.dtype) if delta_bias is not None else None,
        )
        return (*grads, None, None, None)


def selective_scan_triton(
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
    block_d: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Same contract as :func:`selective_scan_reference`; ``chunk_size`` sets the checkpoint spacing.

    ``chunk_size`` and ``block_d`` default to the module's ``DEFAULT_CHUNK`` and ``DEFAULT_BLOCK_D``, read at call
    time (a CPU smoke run under the interpreter lowers ``DEFAULT_CHUNK`` to keep the masked tail short).
    """
    chunk_size = DEFAULT_CHUNK if chunk_size is None else chunk_size
    block_d = DEFAULT_BLOCK_D if block_d is None else block_d
    if chunk_size < 1 or block_d < 1:
        raise ValueError(f"selective_scan_triton: chunk_size and block_d must be >= 1, got {chunk_size}, {block_d}")
    y, last = SelectiveScanTriton.apply(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, block_d)
    return (y, last) if return_last_state else y
