"""The basic parametrised layers: Linear, Embedding, RMSNorm and the two feed-forward networks.

Conventions shared by all of them (they fix the state-dict layout of ``docs/ADAPTERS.md``):

- ``Linear`` stores ``weight`` as ``(d_out, d_in)`` and computes ``y = x @ W.T``, with no bias. It is initialised
  from a normal with ``std = sqrt(2 / (d_in + d_out))`` truncated at +-3 std.
- ``Embedding`` stores ``weight`` as ``(vocab, d_model)``, initialised from N(0, 1) truncated at +-3.
- ``RMSNorm`` upcasts to float32 inside (the mean of squares underflows in bf16/fp16) and returns the input dtype.
- ``SwiGLU`` is ``w2(silu(w1 x) * w3 x)`` with ``d_ff`` defaulting to 8/3 d_model rounded up to a multiple of 64;
  ``SiLUFFN`` is ``w2(silu(w1 x))`` with ``d_ff`` defaulting to 1.5x SwiGLU's default, so that both FFNs have exactly
  the same parameters.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.nn.functional import silu


class Linear(nn.Module):
    """Bias-free affine map ``y = x @ W.T`` with ``W`` of shape ``(out_features, in_features)``."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        std = math.sqrt(2.0 / (in_features + out_features))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)

    def forward(self, x: Float[Tensor, " ... d_in"]) -> Float[Tensor, " ... d_out"]:
        return x @ self.weight.T

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class Embedding(nn.Module):
    """Lookup table mapping token ids ``(...)`` to vectors ``(..., embedding_dim)``."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: Int[Tensor, " ..."]) -> Float[Tensor, " ... d"]:
        return self.weight[token_ids]

    def extra_repr(self) -> str:
        return f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}"


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain: ``x / sqrt(mean(x^2) + eps) * weight``."""

    def __init__(
        self,
        d_model: int,
        eps: float = 1e-5,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: Float[Tensor, " ... d"]) -> Float[Tensor, " ... d"]:
        in_dtype = x.dtype
        x = x.float()
        inv_rms = torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return (x * inv_rms * self.weight.float()).to(in_dtype)

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


def default_swiglu_d_ff(d_model: int, multiple_of: int = 64) -> int:
    """8/3 d_model rounded up to a multiple of ``multiple_of`` (hardware-friendly, ~4 d_model^2 x 3 params)."""
    return multiple_of * math.ceil(8 * d_model / 3 / multiple_of)


class SwiGLU(nn.Module):
    """Gated feed-forward network ``w2(silu(w1 x) * w3 x)`` (Shazeer, 2020)."""

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d_ff = default_swiglu_d_ff(d_model) if d_ff is None else d_ff
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, " ... d"]) -> Float[Tensor, " ... d"]:
        return self.w2(silu(self.w1(x)) * self.w3(x))


class SiLUFFN(nn.Module):
    """Ungated feed-forward network ``w2(silu(w1 x))``; the ablation peer of :class:`SwiGLU`."""

    def __init__(
        self,
        d_model: int,
        d_ff: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        d_ff = 3 * default_swiglu_d_ff(d_model) // 2 if d_ff is None else d_ff
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)

    def forward(self, x: Float[Tensor, " ... d"]) -> Float[Tensor, " ... d"]:
        return self.w2(silu(self.w1(x)))
