"""Stateless tensor functions the models are built from, written from scratch.

Every reduction here is numerically stable: softmax and log-softmax subtract the row maximum before
exponentiating, and cross-entropy is computed as ``logsumexp(logits) - logits[target]`` so that logits scaled by
1000 (or shifted by a large constant) give the same finite loss as the unscaled ones would mathematically.

``softmax`` and ``cross_entropy`` carry hand-written backward passes (``torch.autograd.Function``): softmax saves
only its output (``dx = y * (g - sum(g * y))``) and cross-entropy only the softmax it computed on the way
(``dlogits = (softmax - onehot) / N``). Autograd through the composite formulas would keep every intermediate
(shifted logits, exponentials, sums) alive until backward, which costs memory and time at vocab or
sequence-squared sizes.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, dim: int, mask: Tensor | None) -> Tensor:
        y = x.masked_fill(~mask, float("-inf")) if mask is not None else x.clone()  # the only full-size allocation
        y = y.sub_(y.amax(dim=dim, keepdim=True)).exp_()
        y = y.div_(y.sum(dim=dim, keepdim=True))
        ctx.save_for_backward(y)
        ctx.dim = dim
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (y,) = ctx.saved_tensors  # masked entries have y = 0, so their gradient is 0 with no extra pass
        return (grad - (grad * y).sum(dim=ctx.dim, keepdim=True)).mul_(y), None, None


def softmax(x: Float[Tensor, " ..."], dim: int = -1) -> Float[Tensor, " ..."]:
    """``exp(x) / sum(exp(x))`` along ``dim``, computed after subtracting the maximum so nothing overflows."""
    return _Softmax.apply(x, dim, None)


def masked_softmax(x: Float[Tensor, " ..."], mask: Bool[Tensor, " ..."], dim: int = -1) -> Float[Tensor, " ..."]:
    """Softmax over the entries where ``mask`` (broadcastable to ``x``) is True; the others get probability 0."""
    return _Softmax.apply(x, dim, mask)


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
    return _CrossEntropy.apply(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1, 1))


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: Tensor, targets: Tensor) -> Tensor:  # logits (N, V), targets (N, 1)
        peak = logits.amax(dim=-1, keepdim=True)  # (N, 1)
        exp = (logits - peak).exp_()  # (N, V), a fresh tensor
        total = exp.sum(dim=-1, keepdim=True)  # (N, 1)
        loss = (total.log() + peak - logits.gather(-1, targets)).mean()
        ctx.save_for_backward(exp.div_(total), targets)  # keep the softmax: backward needs nothing else
        return loss

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        probs, targets = ctx.saved_tensors
        scale = grad / probs.shape[0]
        grad_logits = probs * scale  # (N, V)
        return grad_logits.scatter_add_(-1, targets, (-scale).expand(targets.shape).to(probs.dtype)), None


def perplexity(loss: float | Tensor) -> float:
    """Perplexity ``exp(mean cross-entropy in nats)``."""
    return math.exp(float(loss))
