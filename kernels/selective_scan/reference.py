"""Sequential reference for the Mamba-1 selective scan: one Python step per time step, obviously correct.

It is the oracle for the fast backends (autograd through this loop gives the reference gradients), and far too
slow for training: forward is O(L) small kernel launches and its backward grows with L per step.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kernels.selective_scan.common import discretize_dt, silu


def selective_scan_reference(
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
) -> Tensor | tuple[Tensor, Tensor]:
    """``y (b, d, L)`` (and the final state ``(b, d, n)`` if asked); state kept in float32 (float64 stays float64)."""
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    dt = discretize_dt(delta, delta_bias, delta_softplus).to(compute)  # (b, d, L)
    u_c, A_c, B_c, C_c = u.to(compute), A.to(compute), B.to(compute), C.to(compute)
    batch, d, L = u.shape
    h = torch.zeros(batch, d, A.shape[1], dtype=compute, device=u.device)  # (b, d, n)
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, :, t, None] * A_c)  # (b, d, n)
        h = decay * h + (dt[:, :, t] * u_c[:, :, t])[:, :, None] * B_c[:, None, :, t]
        ys.append((h * C_c[:, None, :, t]).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1)  # (b, d, L)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_c
    if z is not None:
        y = y * silu(z.to(compute))
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y
