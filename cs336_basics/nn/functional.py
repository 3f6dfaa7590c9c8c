"""Stateless tensor functions the models are built from, written from scratch.

Every reduction here is numerically stable: softmax and log-softmax subtract the row maximum before
exponentiating, and cross-entropy is computed as ``logsumexp(logits) - logits[target]`` so that logits scaled by
1000 (or shifted by a large constant) give the same finite loss as the unscaled ones would mathematically.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor


def softmax(x: Float[Tensor, " ..."], dim: int = -1) -> Float[Tensor, " ..."]:
    """``exp(x) / sum(exp(x))`` along ``dim``, computed after subtracting the maximum so nothing overflows."""
    shifted = x - x.amax(dim=dim, keepdim=True)
    exp = shifted.exp()
    return exp / exp.sum(dim=dim, keepdim=True)


def _logsumexp(x: Float[Tensor, " ..."], dim: int) -> Float[Tensor, " ..."]:
    """Stable ``log(sum(exp(x)))`` along ``dim`` (kept as a size-1 dim)."""
    peak = x.amax(dim=dim, keepdim=True).detach()
    return peak + (x - peak).exp().sum(dim=dim, keepdim=True).log()


def log_softmax(x: Float[Tensor, " ..."], dim: int = -1) -> Float[Tensor, " ..."]:
    """``log(softmax(x))`` without ever forming the (possibly underflowing) softmax itself."""
    return x - _logsumexp(x, dim)


def silu(x: Float[Tensor, " ..."]) -> Float[Tensor, " ..."]:
    """SiLU / swish activation ``x * sigmoid(x)``."""
    return x * torch.sigmoid(x)


def cross_entropy(logits: Float[Tensor, " ... vocab"], targets: Int[Tensor, " ..."]) -> Float[Tensor, ""]:
    """Mean negative log-likelihood of ``targets`` under ``logits``, averaged over all leading dimensions."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"cross_entropy: logits {tuple(logits.shape)} need shape targets.shape + (vocab,), "
            f"got targets {tuple(targets.shape)}"
        )
    logits = logits.reshape(-1, logits.shape[-1])  # (N, V)
    targets = targets.reshape(-1, 1)  # (N, 1)
    target_logit = logits.gather(-1, targets)  # (N, 1)
    return (_logsumexp(logits, dim=-1) - target_logit).mean()


def perplexity(loss: float | Tensor) -> float:
    """Perplexity ``exp(mean cross-entropy in nats)``."""
    return math.exp(float(loss))
