"""AdamW with decoupled weight decay (Loshchilov & Hutter, 2019), written against ``torch.optim.Optimizer``.

The update follows the order of ``torch.optim.AdamW`` exactly, so the two agree to rounding on any parameter set:

1. ``t += 1`` (the first step uses ``t = 1``);
2. decoupled decay ``p <- p * (1 - lr * weight_decay)`` (applied to the weights, not folded into the gradient);
3. moments ``m <- beta1 * m + (1 - beta1) * g`` and ``v <- beta2 * v + (1 - beta2) * g^2``;
4. bias-corrected step ``p <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``.

Every hyper-parameter may differ per parameter group (e.g. ``weight_decay=0`` for norm gains, see
``cs336_basics.models.base.parameter_groups``), and the state (``step``, ``exp_avg``, ``exp_avg_sq`` per parameter)
round-trips through ``state_dict`` / ``load_state_dict`` so training resumes bit-identically.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import torch


def _check_hyperparameters(lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
    if not lr >= 0.0:
        raise ValueError(f"AdamW: learning rate must be >= 0, got lr={lr}")
    if len(betas) != 2 or not all(0.0 <= beta < 1.0 for beta in betas):
        raise ValueError(f"AdamW: betas must be two numbers in [0, 1), got betas={betas}")
    if not eps >= 0.0:
        raise ValueError(f"AdamW: eps must be >= 0, got eps={eps}")
    if not weight_decay >= 0.0:
        raise ValueError(f"AdamW: weight_decay must be >= 0, got weight_decay={weight_decay}")


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay; a drop-in for ``torch.optim.AdamW`` (without amsgrad/maximize).

    ``foreach`` selects the multi-tensor path (one kernel launch per operation for a whole group instead of one per
    parameter; the same arithmetic). ``None`` picks it when every parameter lives on a CUDA device, as torch does.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        foreach: bool | None = None,
    ) -> None:
        _check_hyperparameters(lr, betas, eps, weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "foreach": foreach}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group, validating any hyper-parameter it overrides (the base class fills in the rest)."""
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_hyperparameters(group["lr"], group["betas"], group["eps"], group["weight_decay"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Apply one update to every parameter that has a gradient; returns ``closure()`` if one is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            for param in params:
                if param.grad.is_sparse:
                    raise ValueError("AdamW does not support sparse gradients; use dense embeddings")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] = int(state["step"]) + 1  # int() also adopts torch.optim.AdamW state (tensor step)
            foreach = group.get("foreach")
            if foreach is None:
                foreach = all(p.device.type == "cuda" for p in params)
            update = _foreach_update if foreach else _single_tensor_update
            update(params, [self.state[p] for p in params], group)
        return loss


def _single_tensor_update(params: list[torch.Tensor], states: list[dict[str, Any]], group: dict[str, Any]) -> None:
    """The update of the module docstring, one parameter at a time (``step`` already incremented)."""
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    for param, state in zip(params, states, strict=True):
        grad, exp_avg, exp_avg_sq, t = param.grad, state["exp_avg"], state["exp_avg_sq"], state["step"]
        if weight_decay != 0.0:
            param.mul_(1.0 - lr * weight_decay)
        exp_avg.lerp_(grad, 1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        step_size = lr / (1.0 - beta1**t)
        denom = (exp_avg_sq.sqrt() / (1.0 - beta2**t) ** 0.5).add_(eps)
        param.addcdiv_(exp_avg, denom, value=-step_size)


def _foreach_update(params: list[torch.Tensor], states: list[dict[str, Any]], group: dict[str, Any]) -> None:
    """The same update with ``torch._foreach_*`` ops, batched per (device, dtype) since each call needs one of each."""
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for index, param in enumerate(params):
        buckets[(param.device, param.dtype)].append(index)
    for indices in buckets.values():
        ps = [params[i] for i in indices]
        grads = [params[i].grad for i in indices]
        exp_avgs = [states[i]["exp_avg"] for i in indices]
        exp_avg_sqs = [states[i]["exp_avg_sq"] for i in indices]
        steps = [states[i]["step"] for i in indices]
        if weight_decay != 0.0:
            torch._foreach_mul_(ps, 1.0 - lr * weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [(1.0 - beta2**t) ** 0.5 for t in steps])
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(ps, exp_avgs, denoms, [-(lr / (1.0 - beta1**t)) for t in steps])
