"""Hebbian fast weights as a causal residual branch (after Ba et al., 2016, "Using Fast Weights to Attend to the
Recent Past").

Each sequence carries its own fast-weight matrix per head, written by Hebbian outer products and read by a query:

    A_t = lambda * A_{t-1} + eta * k_t v_t^T        y_t = q_t A_t

with ``q, k, v`` projections of the (RMS-normalised) input, keys and queries L2-normalised so the matrix stays
bounded, a learned write rate ``eta = softplus(rate_logit)`` and decay ``lambda = sigmoid(decay_logit)`` per head.
``A_t`` contains token ``t`` and nothing later, so the branch is causal. The whole sequence is computed in parallel
as ``y_t = sum_{s<=t} eta lambda^(t-s) (q_t . k_s) v_s`` (O(T^2), fine for the short contexts of this codebase);
with a :class:`FastWeightState` the matrix is carried across calls for incremental decoding.

:class:`FastWeightBranch` returns ``out_proj(y)`` for the caller to add to its residual stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.nn.layers import Linear, RMSNorm


@dataclass
class FastWeightState:
    """The fast-weight matrices of a batch, ``(b, heads, head_dim, head_dim)``; updated in place."""

    matrix: Tensor


def _l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    return x * torch.rsqrt(x.square().sum(dim=-1, keepdim=True) + eps)


class FastWeightBranch(nn.Module):
    """Pre-norm Hebbian fast-weight branch ``(b, T, d) -> (b, T, d)``; keys norm, q/k/v/out_proj, rate/decay logits."""

    def __init__(self, d_model: int, num_heads: int = 4, init_decay: float = 0.9, init_rate: float = 0.5) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"FastWeightBranch: d_model={d_model} must be divisible by num_heads={num_heads}")
        if not 0 < init_decay < 1 or init_rate <= 0:
            raise ValueError(f"need 0 < init_decay < 1 and init_rate > 0, got {init_decay}, {init_rate}")
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.norm = RMSNorm(d_model)
        self.q_proj = Linear(d_model, d_model)
        self.k_proj = Linear(d_model, d_model)
        self.v_proj = Linear(d_model, d_model)
        self.out_proj = Linear(d_model, d_model)
        inverse_softplus_rate = init_rate + math.log(-math.expm1(-init_rate))
        self.rate_logit = nn.Parameter(torch.full((num_heads,), inverse_softplus_rate))
        self.decay_logit = nn.Parameter(torch.full((num_heads,), float(torch.logit(torch.tensor(init_decay)))))

    def make_state(self, batch_size: int) -> FastWeightState:
        weight = self.q_proj.weight
        shape = (batch_size, self.num_heads, self.head_dim, self.head_dim)
        return FastWeightState(torch.zeros(shape, device=weight.device, dtype=weight.dtype))

    def decay_and_rate(self) -> tuple[Tensor, Tensor]:
        """Per-head ``lambda`` and ``eta``."""
        return torch.sigmoid(self.decay_logit), torch.logaddexp(self.rate_logit, torch.zeros(()))

    def forward(self, x: Float[Tensor, "b T d"], state: FastWeightState | None = None) -> Float[Tensor, "b T d"]:
        b, T, d = x.shape
        h = self.norm(x)

        def heads(t: Tensor) -> Tensor:
            return t.view(b, T, self.num_heads, self.head_dim).transpose(1, 2)  # (b, H, T, hd)

        q, k, v = _l2_normalize(heads(self.q_proj(h))), _l2_normalize(heads(self.k_proj(h))), heads(self.v_proj(h))
        eta = torch.logaddexp(self.rate_logit, torch.zeros(())).view(1, -1, 1, 1)  # softplus, (1, H, 1, 1)
        log_decay = -torch.logaddexp(-self.decay_logit, torch.zeros(()))  # log sigmoid, (H,)
        pos = torch.arange(T, device=x.device, dtype=x.dtype)
        gap = pos[:, None] - pos[None, :]  # (T, T): t - s
        causal = gap >= 0
        decay = torch.where(causal, gap.clamp_min(0)[None] * log_decay.view(-1, 1, 1), float("-inf")).exp()  # (H,T,T)
        scores = (q @ k.transpose(-2, -1)) * decay * eta  # (b, H, T, T)
        y = scores @ v  # (b, H, T, hd)
        if state is not None:
            carry = ((pos + 1)[None, :, None] * log_decay.view(-1, 1, 1)).exp()  # (H, T, 1): lambda^(t+1)
            y = y + carry * (q @ state.matrix)
            tail = ((T - 1 - pos)[None, :, None] * log_decay.view(-1, 1, 1)).exp()  # (H, T, 1): lambda^(T-1-s)
            written = (k * tail * eta).transpose(-2, -1) @ v  # (b, H, hd, hd)
            state.matrix.copy_((T * log_decay).exp().view(1, -1, 1, 1) * state.matrix + written)
        return self.out_proj(y.transpose(1, 2).reshape(b, T, d))
