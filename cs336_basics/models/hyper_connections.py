"""Manifold-constrained hyper-connections (mHC): n residual streams with learned, doubly-stochastic mixing.

A standard residual block computes ``h + f(h)``. Hyper-connections (Zhu et al., 2024) widen the residual into ``n``
streams ``X (..., n, d)``; each branch ``f`` (attention / mixer, or FFN, wrapped separately) reads a learned
combination of the streams, writes its output back with learned per-stream gains, and the streams are mixed by a
learned ``n x n`` matrix. mHC (DeepSeek, 2025) constrains that mixing matrix to be doubly stochastic by
Sinkhorn-Knopp, so the mixing neither amplifies nor shrinks the residual signal however deep the network is.

Here one wrapped branch computes ``X' = H_res (X + h_post ⊗ f(h_pre^T X))`` with ``h_pre = sigmoid(a)``,
``h_post = 2 sigmoid(b)`` and ``H_res = sinkhorn(R)``. (Mixing after the write-back is a reparametrisation of
mHC's ``H_res X + h_post ⊗ f``; it lets even the first branch's ``H_res`` see distinct streams.)

Initialisation, and why: the network must start as a standard residual network, yet every mixing parameter must get
a gradient. A public-implementation failure is ``R`` so large that Sinkhorn returns the exact identity, whose
Jacobian underflows to zero so ``H_res`` never learns; and with identical streams and symmetric read/write weights
the gradient of a doubly-stochastic ``H_res`` vanishes by symmetry. So:

- streams start as copies of ``h``; every branch reads, and the final collapse returns, ``w^T X`` with fixed,
  deliberately non-uniform ``w`` (sum 1): the reads differ per stream, so the stream gradients differ;
- ``h_post = 1 + eps`` with non-uniform ``eps`` and ``w^T eps = 0``: streams diverge, yet ``w^T X`` follows
  ``h + f(h)`` exactly while ``H_res = I``;
- ``R = c I`` with ``c = 6``: ``H_res`` is the identity up to ~``e^-c`` off the diagonal, near enough that the
  network is a standard residual one to ~1e-3, far enough that the Sinkhorn Jacobian is not zero. ``R`` is excluded
  from weight decay (:func:`~cs336_basics.models.base.no_weight_decay`): decay would shrink it towards zero, i.e.
  ``H_res`` towards uniform averaging of the streams.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.models.base import no_weight_decay


def sinkhorn(logits: Float[Tensor, "... n n"], num_iters: int = 20) -> Float[Tensor, "... n n"]:
    """Doubly-stochastic matrix from ``exp(logits)`` by alternating row and column normalisation in log space.

    The last step normalises columns, so column sums are exact and row sums converge geometrically.
    """
    log_p = logits.float()
    for _ in range(num_iters):
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)  # rows
        log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)  # columns
    return log_p.exp().to(logits.dtype)


def stream_read_weights(n_streams: int) -> Tensor:
    """The fixed, non-uniform read weights ``w`` (sum 1) used at initialisation and by the final collapse."""
    spread = torch.linspace(-0.5, 0.5, n_streams) if n_streams > 1 else torch.zeros(1)
    return (1.0 + spread) / n_streams  # (n,)


def expand_streams(x: Float[Tensor, "... d"], n_streams: int) -> Float[Tensor, "... n d"]:
    """Residual streams at the network input: ``n`` copies of the hidden state."""
    return x.unsqueeze(-2).expand(*x.shape[:-1], n_streams, x.shape[-1]).contiguous()


def collapse_streams(streams: Float[Tensor, "... n d"]) -> Float[Tensor, "... d"]:
    """The hidden state read out of the streams at the network output: ``w^T X``."""
    w = stream_read_weights(streams.shape[-2]).to(device=streams.device, dtype=streams.dtype)
    return torch.einsum("n,...nd->...d", w, streams)


class HyperConnection(nn.Module):
    """Wraps one residual branch ``f: (..., d) -> (..., d)`` so it runs over ``n`` mixed residual streams.

    ``forward(streams (..., n, d), *args, **kwargs)`` runs the owned ``branch`` with the extra arguments;
    ``mix(streams, fn)`` runs any callable instead, for models whose branch modules live elsewhere (e.g. inside a
    TransformerBlock whose state-dict keys must not move). Parameters: ``pre_logits (n,)``, ``post_logits (n,)``,
    ``res_logits (n, n)``.
    """

    def __init__(
        self,
        branch: nn.Module | None = None,
        n_streams: int = 4,
        sinkhorn_iters: int = 20,
        residual_logit: float = 6.0,
        post_spread: float = 0.5,
    ) -> None:
        super().__init__()
        if n_streams < 1:
            raise ValueError(f"HyperConnection: n_streams must be >= 1 (2-4 is typical), got {n_streams}")
        self.branch = branch
        self.n_streams = n_streams
        self.sinkhorn_iters = sinkhorn_iters
        w = stream_read_weights(n_streams)
        spread = n_streams * w - 1.0  # zero-mean spread behind w
        eps = post_spread * (spread - (w * spread).sum())  # w^T eps = 0
        self.pre_logits = nn.Parameter(torch.logit(w))
        self.post_logits = nn.Parameter(torch.logit((1.0 + eps) / 2.0))
        # Not weight-decayed: decay would pull R towards 0, i.e. H_res towards uniform stream averaging.
        self.res_logits = no_weight_decay(nn.Parameter(residual_logit * torch.eye(n_streams)))

    def mixing(self) -> tuple[Tensor, Tensor, Tensor]:
        """``h_pre (n,)``, ``h_post (n,)`` and the doubly-stochastic ``H_res (n, n)``."""
        h_pre = torch.sigmoid(self.pre_logits)
        h_post = 2.0 * torch.sigmoid(self.post_logits)
        return h_pre, h_post, sinkhorn(self.res_logits, self.sinkhorn_iters)

    def forward(self, streams: Float[Tensor, "... n d"], *args, **kwargs) -> Float[Tensor, "... n d"]:
        if self.branch is None:
            raise ValueError("this HyperConnection owns no branch; call mix(streams, fn) instead")
        return self.mix(streams, lambda x: self.branch(x, *args, **kwargs))

    def mix(self, streams: Float[Tensor, "... n d"], fn: Callable[[Tensor], Tensor]) -> Float[Tensor, "... n d"]:
        """``H_res (X + h_post ⊗ fn(h_pre^T X))``."""
        h_pre, h_post, h_res = (m.to(streams.dtype) for m in self.mixing())
        x = torch.einsum("n,...nd->...d", h_pre, streams)  # (..., d)
        y = fn(x)  # (..., d)
        written = streams + h_post[:, None] * y.unsqueeze(-2)  # (..., n, d)
        return torch.einsum("ij,...jd->...id", h_res, written)

    def extra_repr(self) -> str:
        return f"n_streams={self.n_streams}, sinkhorn_iters={self.sinkhorn_iters}"


def mhc_stability_gain(modules: list[HyperConnection]) -> float:
    """Spectral norm of the product of the ``H_res`` matrices: ~1 for doubly-stochastic mixing at any depth."""
    prod = None
    for module in modules:
        h = module.mixing()[2].detach()
        prod = h if prod is None else h @ prod
    return 1.0 if prod is None else float(torch.linalg.matrix_norm(prod, ord=2))
