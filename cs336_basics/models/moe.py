"""Sparse mixture-of-experts feed-forward layer (dropless top-k routing) and model-wide MoE reporting.

- ``MoEFeedForward`` replaces a dense FFN: a linear router scores ``E`` SwiGLU experts per token, each token is sent
  to its top-k experts (k = 1 or 2) and their outputs are summed, weighted by the router probabilities (renormalised
  over the chosen k when k > 1; for k = 1 the raw probability is kept, as in Switch, so the router still gets a
  gradient from the main loss).
- Router initialisation (``router_init``): ``"switch"`` (default) draws the router weights from a truncated normal
  (cut at two standard deviations) whose standard deviation is ``sqrt(s / d_model)`` with ``s = router_init_scale
  = 0.1``: the fan-in scaling of Switch Transformer (Fedus et al., 2021, section 2.4) with its recommended 10x
  smaller scale, so that the router starts near uniform. (Switch shrinks every weight that way; here only the
  router, whose starting confidence is the concern; the experts keep the SwiGLU init.) With RMS-normalised inputs
  each logit then has variance ``s``, and with 8 experts the mean top probability at init is about 0.19 (uniform:
  0.125); the ``"cs336"`` init (truncated normal, std ``sqrt(2 / (d_model + E))``, the project's ``Linear`` default
  and the only one before) gives about 0.44, i.e. a router that starts out confident about random preferences.
- Dropless: tokens are sorted by expert and each expert processes exactly the tokens routed to it; there is no
  capacity factor, so no token is ever dropped and the result does not depend on the other tokens in the batch
  (which keeps a causal model causal).
- Auxiliary losses (Switch Transformer / ST-MoE), weighted and stored after each forward; the language model sums
  every module's ``auxiliary_loss()``:

  - load balancing ``E * sum_i f_i * P_i``, ``P_i`` the mean router probability of expert i over the N tokens and
    ``f_i`` its share of the routing, in one of two conventions (``balance_convention``) that differ only for k > 1:

    - ``"switch"`` (default): ``f_i`` = the fraction of the N tokens that send one of their k assignments to expert
      i, so ``sum_i f_i = k``. This is Switch's ``f_i`` (Fedus et al., 2021, eq. 4) for k = 1, and for k > 1 what
      the ``load_balancing_loss_func`` of Hugging Face transformers' Mixtral and Qwen-MoE models computes. Its
      value at perfectly uniform routing (``f_i = k/E``, ``P_i = 1/E``) is ``k``, and a coefficient tuned in that
      convention (Switch's 0.01 is the default here) means the same here.
    - ``"per_assignment"``: ``f_i`` = expert i's share of the N*k assignments, ``sum_i f_i = 1`` (Megatron-Core's
      ``switch_load_balancing_loss_func`` divides by top-k the same way). The loss, and its gradient, is ``1/k``
      of the ``"switch"`` value, so the same coefficient pushes k times less; its value at uniform routing is 1.
      This was the only convention before, and the published top-2 runs used it.

    (GShard and Mesh-TensorFlow's top-2 count only each token's first choice in ``f_i``; neither convention here.)
    The value does not by itself show balance: it is ``E`` times the inner product of load and mean probability,
    and an unbalanced routing can score at or below the uniform value (e.g. 3:1 load with ``E=2``, top-1, scores
    0.875 when the router is confident on the minority tokens and hesitant on the majority). The load itself is
    what shows balance: ``collect_moe_diagnostics`` reports each expert's share of the assignments and their
    max and min.
  - router z-loss ``mean(logsumexp(logits)^2)`` (ST-MoE).
- ``moe_parameter_counts`` reports total vs active (per-token) parameters.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.nn.functional import softmax
from cs336_basics.nn.layers import Linear, SwiGLU

BALANCE_CONVENTIONS = ("switch", "per_assignment")
ROUTER_INITS = ("switch", "cs336")


def _std_of_unit_normal_truncated_at(c: float) -> float:
    """Standard deviation of N(0, 1) restricted to [-c, c] (0.8796 for c = 2)."""
    density = math.exp(-c * c / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(c / math.sqrt(2))
    return math.sqrt(1 - 2 * c * density / mass)


@torch.no_grad()
def switch_router_init_(weight: Tensor, scale: float = 0.1) -> Tensor:
    """Switch Transformer's init in place: truncated normal (at +-2 std) with standard deviation ``sqrt(scale /
    fan_in)``. As in TensorFlow's and JAX's ``variance_scaling(..., "truncated_normal")``, the parent normal is
    widened by ``1 / 0.8796`` so that the truncated distribution itself has that standard deviation."""
    std = math.sqrt(scale / weight.shape[-1]) / _std_of_unit_normal_truncated_at(2.0)
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2 * std, b=2 * std)


class MoEFeedForward(nn.Module):
    """Top-k routed mixture of SwiGLU experts. Keys: ``router.weight (E, d_model)``, ``experts.{e}.w1/w2/w3``."""

    def __init__(
        self,
        d_model: int,
        num_experts: int = 8,
        top_k: int = 2,
        d_ff: int | None = None,
        load_balance_weight: float = 0.01,
        z_loss_weight: float = 1e-3,
        balance_convention: str = "switch",
        router_init: str = "switch",
        router_init_scale: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if top_k not in (1, 2):
            raise ValueError(f"MoEFeedForward: top_k must be 1 or 2, got {top_k}")
        if num_experts < top_k:
            raise ValueError(f"MoEFeedForward: num_experts ({num_experts}) must be at least top_k ({top_k})")
        if balance_convention not in BALANCE_CONVENTIONS:
            raise ValueError(
                f"MoEFeedForward: balance_convention must be one of {BALANCE_CONVENTIONS}, got {balance_convention!r}"
            )
        if router_init not in ROUTER_INITS:
            raise ValueError(f"MoEFeedForward: router_init must be one of {ROUTER_INITS}, got {router_init!r}")
        if router_init_scale <= 0:
            raise ValueError(f"MoEFeedForward: router_init_scale must be > 0, got {router_init_scale}")
        self.num_experts = num_experts
        self.top_k = top_k
        self.balance_convention = balance_convention
        self.load_balance_weight = load_balance_weight
        self.z_loss_weight = z_loss_weight
        self.router = Linear(d_model, num_experts, device=device, dtype=dtype)
        if router_init == "switch":
            switch_router_init_(self.router.weight, router_init_scale)
        self.experts = nn.ModuleList(SwiGLU(d_model, d_ff, device=device, dtype=dtype) for _ in range(num_experts))
        self.last_load_balance_loss: Tensor | None = None
        self.last_z_loss: Tensor | None = None
        self.last_expert_load: Tensor | None = None  # (E,) fraction of assignments per expert

    def route(self, x: Float[Tensor, "N d"]) -> tuple[Tensor, Tensor, Tensor]:
        """Router logits ``(N, E)``, chosen experts ``(N, k)`` and their gate weights ``(N, k)``."""
        logits = self.router(x).float()  # (N, E)
        probs = softmax(logits, dim=-1)
        top_probs, top_idx = probs.topk(self.top_k, dim=-1)  # (N, k)
        gates = top_probs / top_probs.sum(dim=-1, keepdim=True) if self.top_k > 1 else top_probs
        return logits, top_idx, gates

    def forward(self, x: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])  # (N, d)
        n_tokens = flat.shape[0]
        logits, top_idx, gates = self.route(flat)

        # Dropless dispatch: sort the N*k (token, expert) assignments by expert, run each expert on its group.
        expert_of = top_idx.reshape(-1)  # (N*k,)
        token_of = torch.arange(n_tokens, device=x.device).repeat_interleave(self.top_k)  # (N*k,)
        gate_of = gates.reshape(-1)  # (N*k,)
        order = torch.argsort(expert_of, stable=True)
        counts = torch.bincount(expert_of, minlength=self.num_experts)  # (E,)
        out = torch.zeros_like(flat)
        start = 0
        for e, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            idx = order[start : start + count]
            start += count
            tokens = token_of[idx]
            y = self.experts[e](flat[tokens]) * gate_of[idx, None].to(flat.dtype)  # (count, d)
            out.index_add_(0, tokens, y)

        self._store_aux(logits, counts)
        return out.reshape(shape)

    def _store_aux(self, logits: Float[Tensor, "N E"], counts: Tensor) -> None:
        """``counts[i]``: the assignments (of ``N * k``) expert i received; see the module docstring."""
        probs = softmax(logits, dim=-1)
        n_tokens = max(logits.shape[0], 1)
        share = counts.float() / (n_tokens * self.top_k)  # share of the N*k assignments; sums to 1
        f = share if self.balance_convention == "per_assignment" else counts.float() / n_tokens  # sums to k
        mean_prob = probs.mean(dim=0)  # P_i
        self.last_load_balance_loss = self.num_experts * (f * mean_prob).sum()
        self.last_z_loss = torch.logsumexp(logits, dim=-1).square().mean()
        self.last_expert_load = share.detach()

    def auxiliary_loss(self) -> Tensor:
        """Weighted load-balancing + z-loss of the last forward (zero before any forward)."""
        if self.last_load_balance_loss is None or self.last_z_loss is None:
            return torch.zeros((), device=self.router.weight.device)
        return self.load_balance_weight * self.last_load_balance_loss + self.z_loss_weight * self.last_z_loss

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, top_k={self.top_k}, balance_convention={self.balance_convention}"


def collect_moe_diagnostics(model: nn.Module) -> dict[str, float]:
    """Per MoE layer (keyed by module name), from the last forward: each expert's share of the routing assignments
    (``load_{e}``, summing to 1; uniform is ``1/E``), the largest and smallest share (``max_load``, ``min_load``:
    the balance itself), and the unweighted load-balancing loss (in the layer's ``balance_convention``) and z-loss."""
    out: dict[str, float] = {}
    for name, module in model.named_modules():
        if not isinstance(module, MoEFeedForward) or module.last_expert_load is None:
            continue
        loads = module.last_expert_load.tolist()
        for e, frac in enumerate(loads):
            out[f"moe/{name}/load_{e}"] = frac
        out[f"moe/{name}/max_load"] = max(loads)
        out[f"moe/{name}/min_load"] = min(loads)
        out[f"moe/{name}/balance_loss"] = module.last_load_balance_loss.detach().item()
        out[f"moe/{name}/z_loss"] = module.last_z_loss.detach().item()
    return out


def moe_parameter_counts(model: nn.Module) -> dict[str, int]:
    """Total parameters and parameters active per token (only top_k of each MoE layer's experts count as active)."""
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    inactive = 0
    for module in model.modules():
        if isinstance(module, MoEFeedForward):
            per_expert = sum(p.numel() for p in module.experts[0].parameters())
            inactive += (module.num_experts - module.top_k) * per_expert
    return {"total": total, "active": total - inactive}
