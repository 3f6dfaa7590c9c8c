"""Gradient clipping by the global L2 norm.

All gradients are treated as one long vector: if its L2 norm exceeds ``max_l2_norm``, every gradient is scaled by
``max_l2_norm / (norm + 1e-6)`` (the ``1e-6`` guards the division, as in ``torch.nn.utils.clip_grad_norm_``), so
the update direction is kept and only its length shrinks. Parameters without a gradient are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch

CLIP_EPS = 1e-6


def _buckets(grads: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Gradients grouped by (device, dtype): each ``torch._foreach_*`` call needs a single one of each."""
    groups: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = defaultdict(list)
    for grad in grads:
        groups[(grad.device, grad.dtype)].append(grad)
    return list(groups.values())


def global_grad_norm(parameters: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of all gradients taken together, as a scalar tensor (0 when no parameter has a gradient).

    Norms are taken in at least float32 (half-precision gradients would overflow when squared) and in float64 when
    any gradient is float64.
    """
    grads = [p.grad.detach() for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(())
    # Norm of per-tensor norms == norm of the concatenation, without materialising it. The per-tensor norms are
    # moved to one device so parameters spread over devices still give a single number.
    device = grads[0].device
    dtype = torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32
    norms = []
    for bucket in _buckets(grads):
        norms += torch._foreach_norm(bucket, 2, dtype=torch.promote_types(bucket[0].dtype, torch.float32))
    return torch.linalg.vector_norm(torch.stack([n.to(device, dtype) for n in norms]))


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_l2_norm: float) -> float:
    """Scale gradients in place so their global L2 norm is at most ``max_l2_norm``; returns the pre-clip norm."""
    if not max_l2_norm > 0.0:
        raise ValueError(f"max_l2_norm must be > 0, got {max_l2_norm}")
    params = [p for p in parameters if p.grad is not None]
    norm = float(global_grad_norm(params))
    if norm > max_l2_norm:
        scale = max_l2_norm / (norm + CLIP_EPS)
        for bucket in _buckets([p.grad for p in params]):
            torch._foreach_mul_(bucket, scale)
    return norm
