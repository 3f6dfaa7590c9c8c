"""Sequential reference for the Mamba-1 selective scan: one Python step per time step, obviously correct.

It is the oracle for the fast backends (autograd through this loop gives the reference gradients), and far too
slow for training: forward and backward are O(L) small kernel launches each.
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
    batch, d, _ = u.shape
    h = torch.zeros(batch, d, A.shape[1], dtype=compute, device=u.device)  # (b, d, n)
    ys = []
    # unbind (not indexing) per step: its backward is one stack, so the reference's backward stays linear in L.
    steps = zip(dt.unbind(-1), u_c.unbind(-1), B_c.unbind(-1), C_c.unbind(-1), strict=True)
    for dt_t, u_t, B_t, C_t in steps:  # (b, d), (b, d), (b, n), (b, n)
        decay = torch.exp(dt_t[:, :, None] * A_c)  # (b, d, n)
        h = decay * h + (dt_t * u_t)[:, :, None] * B_t[:, None, :]
        ys.append((h * C_t[:, None, :]).sum(-1))  # (b, d)
    y = torch.stack(ys, dim=-1)  # (b, d, L)
    if D is not None:
        y = y + D.to(compute)[:, None] * u_c
    if z is not None:
        y = y * silu(z.to(compute))
    y = y.to(u.dtype)
    return (y, h) if return_last_state else y
