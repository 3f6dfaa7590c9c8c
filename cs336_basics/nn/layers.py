"""The basic layers: Linear, Embedding, RMSNorm, LayerNorm, Dropout, Identity and the two feed-forward networks.

Conventions shared by all of them (they fix the state-dict layout of ``docs/ADAPTERS.md``):

- ``Linear`` stores ``weight`` as ``(d_out, d_in)`` and computes ``y = x @ W.T``, with no bias unless ``bias=True``
  (then a zero-initialised ``bias`` key, for GPT-2/Zoology-style layers). It is initialised from a normal with
  ``std = sqrt(2 / (d_in + d_out))`` truncated at +-3 std.
- ``Embedding`` stores ``weight`` as ``(vocab, d_model)``, initialised from N(0, 1) truncated at +-3.
- ``RMSNorm`` upcasts to float32 inside (the mean of squares underflows in bf16/fp16) and returns the input dtype;
  ``LayerNorm`` (mean and variance, gain and bias: GPT-2's and Zoology's norm) does the same.
- ``dropout`` zeroes each element with probability ``p`` and scales the rest by ``1 / (1 - p)`` (inverted dropout),
  only in training; ``Dropout`` is the module form.
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


class Identity(nn.Module):
    """Returns its input: the stand-in where a configuration turns a norm or the FFN off (``norm="none"``,
    ``ffn.kind="identity"``) or where Hymba's fused projection replaces its SSM's own ``out_proj``, so the module tree
    and every caller keep one shape. No parameters, so state dicts are unaffected."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class Linear(nn.Module):
    """Affine map ``y = x @ W.T (+ b)`` with ``W`` of shape ``(out_features, in_features)``; bias-free by default."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        bias: bool = False,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        std = math.sqrt(2.0 / (in_features + out_features))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None

    def forward(self, x: Float[Tensor, " ... d_in"]) -> Float[Tensor, " ... d_out"]:
        y = x @ self.weight.T
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


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


class _GainNorm(nn.Module):
    """A normalisation over the last dimension with a learned per-feature gain ``weight`` (initialised to 1) and, when
    the subclass sets ``has_bias``, a learned ``bias`` (initialised to 0)."""

    has_bias = False

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
        if self.has_bias:
            self.bias = nn.Parameter(torch.zeros(d_model, device=device, dtype=dtype))

    def extra_repr(self) -> str:
        return f"{self.d_model}, eps={self.eps}"


class RMSNorm(_GainNorm):
    """Root-mean-square normalisation with a learned gain: ``x / sqrt(mean(x^2) + eps) * weight``."""

    def forward(self, x: Float[Tensor, " ... d"]) -> Float[Tensor, " ... d"]:
        in_dtype = x.dtype
        x = x.float()
        inv_rms = torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + self.eps)  # (..., 1)
        return (x * inv_rms * self.weight.float()).to(in_dtype)


class LayerNorm(_GainNorm):
    """Layer normalisation with a learned gain and bias: ``(x - mean) / sqrt(var + eps) * weight + bias``."""

    has_bias = True

    def forward(self, x: Float[Tensor, " ... d"]) -> Float[Tensor, " ... d"]:
        in_dtype = x.dtype
        x = x.float()
        centred = x - x.mean(dim=-1, keepdim=True)  # (..., d)
        inv_std = torch.rsqrt(centred.square().mean(dim=-1, keepdim=True) + self.eps)  # (..., 1): biased variance
        return (centred * inv_std * self.weight.float() + self.bias.float()).to(in_dtype)


def build_norm(kind: str, d_model: int) -> nn.Module:
    """The normalisation layer ``kind`` names: ``"rmsnorm"`` (the default everywhere) or ``"layernorm"``."""
    if kind == "rmsnorm":
        return RMSNorm(d_model)
    if kind == "layernorm":
        return LayerNorm(d_model)
    raise ValueError(f"norm_layer must be 'rmsnorm' or 'layernorm', got {kind!r}")


def dropout(x: Float[Tensor, " ..."], p: float, training: bool) -> Float[Tensor, " ..."]:
    """Inverted dropout: zero each element with probability ``p`` and scale the survivors by ``1 / (1 - p)``."""
    if not training or p == 0.0:
        return x
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    keep = torch.rand_like(x, dtype=torch.float32) >= p
    return x * keep.to(x.dtype) * (1.0 / (1.0 - p))


class Dropout(nn.Module):
    """:func:`dropout` as a module: active in ``train()`` mode, the identity in ``eval()``."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Float[Tensor, " ..."]) -> Float[Tensor, " ..."]:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
