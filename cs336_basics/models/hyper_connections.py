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

Input-dependent maps (mHC eqs. 7-8; ``dynamic=True``): each map is its static logits (``a``, ``b``, ``R`` above, the
paper's biases) plus ``alpha * (x~ phi)``, where ``x~`` is the RMS-normalised concatenation of the token's ``n``
streams, ``phi`` a learned projection and ``alpha`` a learned gate per map (paper init 0.01). Hyper-connections
(Zhu et al., 2024) initialise their dynamic projections to zero; so does this module: the model then starts as
exactly the static one (``0 * alpha + b = b``), no random numbers are drawn (every other parameter initialises as
without the option), and ``phi`` still gets a gradient at once because ``alpha != 0``. The maps are per token and
read only that token's streams, so cached decoding needs no extra state.

Sinkhorn: :func:`sinkhorn` with ``tol`` solves the projection (rows and columns sum to 1 within ``tol``) rather
than running the paper's fixed ``t_max = 20`` normalisations, which leave rows off by percents once the logits have
a spread of a few units.

Learning rate: with Adam, a parameter moves by about the learning rate per step whatever its gradient's size, so in
a short run (the log's 150 steps at lr 3e-3 cosine: ~0.24 in total) a mixing logit that starts at ``c = 6`` and
needs changes of order 1-6 cannot move ``H_res`` off the identity. ``lr_multiplier`` (the runner's
``residual.hc_lr_multiplier``, default 30) gives the static logits their own rate; the maps are bounded by
construction (sigmoid, ``2 sigmoid``, doubly stochastic), so a larger rate cannot make the residual signal explode.
The dynamic projection and its gates keep the base rate (see :class:`HyperConnection`).

Deviations from the paper, by name: the write-back reparametrisation above; the non-uniform read weights ``w`` and
``eps``; the RMS normalisation of ``x~`` has no gain (a gain would only rescale rows of ``phi``); ``phi`` starts at
zero (the public reference code draws it at random); ``phi`` is not weight-decayed; Sinkhorn is solved to a
tolerance; the learning-rate multiplier of the static logits (the paper reports none).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.models.base import no_weight_decay, scale_learning_rate


def sinkhorn(
    logits: Float[Tensor, "... n n"], num_iters: int = 20, tol: float | None = None, max_newton_steps: int = 50
) -> Float[Tensor, "... n n"]:
    """Doubly-stochastic matrix ``diag(e^f) exp(logits) diag(e^g)`` (Sinkhorn-Knopp), batched over leading dims.

    ``tol=None`` is the paper's fixed-length projection: ``num_iters`` alternating row and column normalisations in
    log space, differentiated by autograd through the unrolled loop. The last step normalises columns, so column
    sums are exact, but row sums converge only geometrically, at a rate that approaches 1 when the limit has tiny
    entries: with 20 iterations rows are off by 2-4% for random logits of spread 10, and 1000 iterations still leave
    ~3e-4 for some 2 x 2 cases.

    With ``tol`` the projection is solved to that tolerance: ``num_iters`` Sinkhorn sweeps give a starting point,
    then damped Newton steps on the dual scalings ``(f, g)`` (a ``2n x 2n`` solve per matrix, backtracking on the
    convex dual ``sum exp(L + f 1^T + 1 g^T) - sum f - sum g``) run until every row and column sum is within ``tol``
    of 1 (at most ``max_newton_steps``; Newton converges quadratically near the solution). This runs in float64
    without autograd; the gradient is the exact one of the projection at its fixed point (implicit
    differentiation, :class:`_SinkhornProjection`), so memory does not grow with the iteration count.
    """
    if tol is None:
        log_p = logits.float()
        for _ in range(num_iters):
            log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)  # rows
            log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)  # columns
        return log_p.exp().to(logits.dtype)
    if tol <= 0:
        raise ValueError(f"sinkhorn: tol must be > 0 (or None for fixed iterations), got {tol}")
    return _SinkhornProjection.apply(logits, num_iters, tol, max_newton_steps)


def _gauge_system(p: Tensor) -> Tensor:
    """``[[diag(P 1), P], [P^T, diag(P^T 1)]] + z z^T`` with ``z = (1, -1) / sqrt(2n)``: ``(..., 2n, 2n)``.

    The block matrix is the Hessian of the Sinkhorn dual; it is singular along ``z`` (adding ``t`` to ``f`` and
    subtracting it from ``g`` changes nothing), so ``z z^T`` fixes that gauge. Right-hand sides orthogonal to ``z``
    then get the minimum-norm solution (:func:`_solve`).
    """
    n = p.shape[-1]
    top = torch.cat([torch.diag_embed(p.sum(-1)), p], dim=-1)
    bottom = torch.cat([p.transpose(-1, -2), torch.diag_embed(p.sum(-2))], dim=-1)
    z = torch.cat([torch.ones(n, dtype=p.dtype, device=p.device), -torch.ones(n, dtype=p.dtype, device=p.device)])
    return torch.cat([top, bottom], dim=-2) + torch.outer(z, z) / (2 * n)


def _solve(system: Tensor, rhs: Tensor) -> Tensor:
    """Minimum-norm solution of the symmetric ``system x = rhs`` by a pseudo-inverse (eigenvalues below 1e-12 of the
    largest dropped): when entries of ``P`` underflow (logits spread by tens to hundreds), its support splits into
    blocks, each with a gauge of its own, and a plain solve would fail or amplify rounding along those directions."""
    return torch.linalg.pinv(system, rtol=1e-12, hermitian=True) @ rhs


def _balanced(logits: Tensor, num_iters: int, tol: float, max_newton_steps: int) -> Tensor:
    """The doubly-stochastic scaling of ``exp(logits)`` (float64), every row and column sum within ``tol`` of 1."""
    lg = logits.detach().double()
    n = lg.shape[-1]
    f = torch.zeros(lg.shape[:-1], dtype=lg.dtype, device=lg.device)
    g = torch.zeros_like(f)
    for _ in range(num_iters):
        f = -torch.logsumexp(lg + g.unsqueeze(-2), dim=-1)
        g = -torch.logsumexp(lg + f.unsqueeze(-1), dim=-2)
    steps = 0.5 ** torch.arange(12, dtype=lg.dtype, device=lg.device)  # backtracking candidates 1, 1/2, ..., 2^-11
    for _ in range(max_newton_steps + 1):
        p = torch.exp(lg + f.unsqueeze(-1) + g.unsqueeze(-2))
        grad = torch.cat([p.sum(-1) - 1.0, p.sum(-2) - 1.0], dim=-1)  # gradient of the dual = the constraint error
        if float(grad.abs().amax()) <= tol:
            break
        direction = -_solve(_gauge_system(p), grad.unsqueeze(-1)).squeeze(-1)
        df, dg = direction[..., :n], direction[..., n:]
        # Armijo backtracking, all candidates at once: the largest step that decreases the dual enough.
        t = steps.view((-1,) + (1,) * (lg.ndim - 1))  # (12, 1, ..., 1) against (1, ..., n)
        trial_f, trial_g = f + t * df.unsqueeze(0), g + t * dg.unsqueeze(0)
        trial = torch.exp(lg + trial_f.unsqueeze(-1) + trial_g.unsqueeze(-2)).sum((-1, -2))
        dual = trial - trial_f.sum(-1) - trial_g.sum(-1)  # (12, ...)
        dual0 = p.sum((-1, -2)) - f.sum(-1) - g.sum(-1)
        slope = (grad * direction).sum(-1)  # < 0 for a descent direction
        ok = dual <= dual0 + 1e-4 * t.squeeze(-1) * slope  # (12, ...)
        first = torch.where(ok.any(0), ok.float().argmax(0), torch.full_like(dual0, len(steps) - 1, dtype=torch.long))
        step = steps[first].unsqueeze(-1)
        f, g = f + step * df, g + step * dg
    return p


class _SinkhornProjection(torch.autograd.Function):
    """Sinkhorn projection solved to a tolerance, with the implicit-function gradient at the fixed point.

    At ``P = exp(L + f 1^T + 1 g^T)`` with unit row and column sums, perturbing ``L`` gives
    ``dP = P * (dL + df 1^T + 1 dg^T)`` with ``(df, dg)`` fixed by keeping the sums at 1; eliminating them, the
    vector-Jacobian product of an upstream gradient ``G`` is ``P * (G - a 1^T - 1 b^T)`` where
    ``[[I, P], [P^T, I]] (a, b) = ((P * G) 1, (P * G)^T 1)``.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, num_iters: int, tol: float, max_newton_steps: int) -> Tensor:  # type: ignore[override]
        p = _balanced(logits, num_iters, tol, max_newton_steps)
        ctx.save_for_backward(p)
        return p.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        (p,) = ctx.saved_tensors
        n = p.shape[-1]
        weighted = p * grad_out.double()
        rhs = torch.cat([weighted.sum(-1), weighted.sum(-2)], dim=-1).unsqueeze(-1)
        ab = _solve(_gauge_system(p), rhs).squeeze(-1)
        a, b = ab[..., :n], ab[..., n:]
        grad_logits = weighted - p * (a.unsqueeze(-1) + b.unsqueeze(-2))
        return grad_logits.to(grad_out.dtype), None, None, None


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
    TransformerBlock whose state-dict keys must not move). Static parameters (the paper's biases ``b``):
    ``pre_logits (n,)``, ``post_logits (n,)``, ``res_logits (n, n)``. With ``dynamic=True`` (needs ``dim``) the maps
    also depend on the token, as in mHC: ``dynamic_proj (n*dim, 2n + n^2)`` (the paper's ``phi_pre|phi_post|phi_res``)
    and ``dynamic_gates (3,)`` (``alpha_pre, alpha_post, alpha_res``); see :meth:`mixing`.

    ``sinkhorn_tol`` solves the projection to that tolerance (None: the paper's fixed ``sinkhorn_iters``);
    ``lr_multiplier`` marks the static logits for a learning rate that many times the base rate
    (:func:`~cs336_basics.models.base.scale_learning_rate`). The dynamic projection and gates keep the base rate:
    ``phi`` has ``n*d`` inputs, so one Adam step (about ``lr`` per entry) already moves its output by up to
    ``~lr * n * d``, like any weight matrix; multiplied, the dynamic logits grew by hundreds within a few steps.
    """

    def __init__(
        self,
        branch: nn.Module | None = None,
        n_streams: int = 4,
        sinkhorn_iters: int = 20,
        residual_logit: float = 6.0,
        post_spread: float = 0.5,
        *,
        dim: int | None = None,
        dynamic: bool = False,
        gate_init: float = 0.01,
        sinkhorn_tol: float | None = 1e-6,
        lr_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        if n_streams < 1:
            raise ValueError(f"HyperConnection: n_streams must be >= 1 (2-4 is typical), got {n_streams}")
        if dynamic and (dim is None or dim < 1):
            raise ValueError(f"HyperConnection: dynamic=True needs the stream width dim >= 1, got dim={dim}")
        if not lr_multiplier > 0:
            raise ValueError(f"HyperConnection: lr_multiplier must be > 0, got {lr_multiplier}")
        self.branch = branch
        self.n_streams = n_streams
        self.sinkhorn_iters = sinkhorn_iters
        self.sinkhorn_tol = sinkhorn_tol
        self.residual_logit, self.post_spread = residual_logit, post_spread
        pre0, post0, res0 = self.initial_logits()
        self.pre_logits = nn.Parameter(pre0)
        self.post_logits = nn.Parameter(post0)
        # Not weight-decayed: decay would pull R towards 0, i.e. H_res towards uniform stream averaging.
        self.res_logits = no_weight_decay(nn.Parameter(res0))
        self.dynamic = dynamic
        if dynamic:
            n = n_streams
            # Zero-initialised, so the wrapper starts as exactly the static one (and draws no random numbers, so the
            # rest of the model initialises as before); the gates are nonzero, so the projection gets a gradient at
            # once. Not weight-decayed, like the static logits: decay would pull the maps back to static ones.
            self.dynamic_proj = no_weight_decay(nn.Parameter(torch.zeros(n * dim, 2 * n + n * n)))
            self.dynamic_gates = nn.Parameter(torch.full((3,), float(gate_init)))
        self.last_dynamic_stats: dict[str, Tensor] = {}
        self.lr_multiplier = lr_multiplier
        if lr_multiplier != 1.0:
            for param in (self.pre_logits, self.post_logits, self.res_logits):
                scale_learning_rate(param, lr_multiplier)

    def initial_logits(self) -> tuple[Tensor, Tensor, Tensor]:
        """The deterministic initial ``pre_logits``, ``post_logits`` and ``res_logits`` (see the module docstring)."""
        n = self.n_streams
        w = stream_read_weights(n)
        spread = n * w - 1.0  # zero-mean spread behind w
        eps = self.post_spread * (spread - (w * spread).sum())  # w^T eps = 0
        return torch.logit(w), torch.logit((1.0 + eps) / 2.0), self.residual_logit * torch.eye(n)

    def mixing(self, streams: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``h_pre (..., n)``, ``h_post (..., n)`` and the doubly-stochastic ``H_res (..., n, n)``.

        Static (leading dims empty) without ``streams`` or without the dynamic part. With it, per token, as in mHC
        (Xie et al., 2025, eqs. 7-8): ``x~ = RMSNorm(vec(X))`` over all ``n*d`` stream entries (without a gain: a
        gain would multiply into ``phi``), ``H~ = alpha * (x~ phi) + b`` for each map, then
        ``h_pre = sigmoid(H~_pre)``, ``h_post = 2 sigmoid(H~_post)``, ``H_res = sinkhorn(H~_res)``.
        """
        pre, post, res = self.pre_logits, self.post_logits, self.res_logits
        if self.dynamic and streams is not None:
            n = self.n_streams
            flat = streams.reshape(*streams.shape[:-2], -1)  # (..., n*d)
            normed = flat * torch.rsqrt(flat.square().mean(-1, keepdim=True) + 1e-6)
            dyn = normed @ self.dynamic_proj.to(flat.dtype)  # (..., 2n + n^2)
            gates = self.dynamic_gates.to(dyn.dtype)
            pre = gates[0] * dyn[..., :n] + pre
            post = gates[1] * dyn[..., n : 2 * n] + post
            res = gates[2] * dyn[..., 2 * n :].unflatten(-1, (n, n)) + res
        h_res = sinkhorn(res, self.sinkhorn_iters, self.sinkhorn_tol)
        return torch.sigmoid(pre), 2.0 * torch.sigmoid(post), h_res

    def forward(self, streams: Float[Tensor, "... n d"], *args, **kwargs) -> Float[Tensor, "... n d"]:
        if self.branch is None:
            raise ValueError("this HyperConnection owns no branch; call mix(streams, fn) instead")
        return self.mix(streams, lambda x: self.branch(x, *args, **kwargs))

    def mix(self, streams: Float[Tensor, "... n d"], fn: Callable[[Tensor], Tensor]) -> Float[Tensor, "... n d"]:
        """``H_res (X + h_post ⊗ fn(h_pre^T X))``, with per-token maps when the wrapper is dynamic."""
        if not self.dynamic:
            h_pre, h_post, h_res = (m.to(streams.dtype) for m in self.mixing())
            x = torch.einsum("n,...nd->...d", h_pre, streams)  # (..., d)
            y = fn(x)  # (..., d)
            written = streams + h_post[:, None] * y.unsqueeze(-2)  # (..., n, d)
            return torch.einsum("ij,...jd->...id", h_res, written)
        h_pre, h_post, h_res = (m.to(streams.dtype) for m in self.mixing(streams))  # (..., n), (..., n), (..., n, n)
        self._record(h_res)
        x = torch.einsum("...n,...nd->...d", h_pre, streams)
        y = fn(x)
        written = streams + h_post.unsqueeze(-1) * y.unsqueeze(-2)
        return torch.einsum("...ij,...jd->...id", h_res, written)

    def _record(self, h_res: Tensor) -> None:
        """Keep summary statistics of the last call's per-token ``H_res`` for :func:`mhc_diagnostics`."""
        with torch.no_grad():
            n = self.n_streams
            h = h_res.detach().float().reshape(-1, n, n)
            eye = torch.eye(n, device=h.device)
            off_diagonal = h.sum((-1, -2)) - h.diagonal(dim1=-2, dim2=-1).sum(-1)
            self.last_dynamic_stats = {
                "mean_off_diagonal": off_diagonal.mean() / max(1, n * n - n),
                "max_abs_delta_from_identity": (h - eye).abs().amax(),
            }

    def extra_repr(self) -> str:
        return (
            f"n_streams={self.n_streams}, sinkhorn_iters={self.sinkhorn_iters}, sinkhorn_tol={self.sinkhorn_tol}, "
            f"dynamic={self.dynamic}, lr_multiplier={self.lr_multiplier}"
        )


def mhc_stability_gain(modules: list[HyperConnection]) -> float:
    """Spectral norm of the product of the (static) ``H_res`` matrices: ~1 for doubly-stochastic mixing at any depth."""
    prod = None
    for module in modules:
        h = module.mixing()[2].detach()
        prod = h if prod is None else h @ prod
    return 1.0 if prod is None else float(torch.linalg.matrix_norm(prod, ord=2))


def mhc_diagnostics(modules: list[HyperConnection]) -> dict[str, float]:
    """How far the mixing has moved from its initialisation, for the logs (``mhc/...`` keys); empty without mHC.

    - ``residual_gain``: spectral norm of the composed static ``H_res`` (1 for doubly-stochastic mixing);
    - ``mean_off_diagonal``: mean off-diagonal entry of the static ``H_res`` (~``e^-c`` at init);
    - ``h_res_max_abs_delta_from_identity``: largest ``|H_res - I|`` entry of any static ``H_res``;
    - ``max_abs_delta_from_init``: largest change of any static logit (pre, post, residual) since initialisation;
      ``res_logits_max_abs_delta_from_init``: the same for the residual-mixing logits alone;
    - with the dynamic part: ``dynamic_gate_max_abs`` and ``dynamic_proj_max_abs`` (both start at 0.01 and 0), and
      ``dynamic_mean_off_diagonal`` / ``dynamic_h_res_max_abs_delta_from_identity`` of the per-token ``H_res`` over
      the last forward pass.
    """
    if not modules:
        return {}
    out = {"residual_gain": mhc_stability_gain(modules)}
    off, delta_identity, delta_all, delta_res = [], 0.0, 0.0, 0.0
    with torch.no_grad():
        for module in modules:
            h = module.mixing()[2].detach().float()
            n = module.n_streams
            off.append(float(h.sum() - h.diagonal().sum()) / max(1, n * n - n))
            delta_identity = max(delta_identity, float((h - torch.eye(n, device=h.device)).abs().max()))
            params = (module.pre_logits, module.post_logits, module.res_logits)
            for param, start in zip(params, module.initial_logits(), strict=True):
                moved = float((param.detach().float().cpu() - start).abs().max())
                delta_all = max(delta_all, moved)
                if param is module.res_logits:
                    delta_res = max(delta_res, moved)
    out["mean_off_diagonal"] = sum(off) / len(off)
    out["h_res_max_abs_delta_from_identity"] = delta_identity
    out["max_abs_delta_from_init"] = delta_all
    out["res_logits_max_abs_delta_from_init"] = delta_res
    dynamic = [m for m in modules if m.dynamic]
    if dynamic:
        out["dynamic_gate_max_abs"] = max(float(m.dynamic_gates.detach().abs().max()) for m in dynamic)
        out["dynamic_proj_max_abs"] = max(float(m.dynamic_proj.detach().abs().max()) for m in dynamic)
        seen = [m.last_dynamic_stats for m in dynamic if m.last_dynamic_stats]
        if seen:
            out["dynamic_mean_off_diagonal"] = sum(float(s["mean_off_diagonal"]) for s in seen) / len(seen)
            out["dynamic_h_res_max_abs_delta_from_identity"] = max(
                float(s["max_abs_delta_from_identity"]) for s in seen
            )
    return out
