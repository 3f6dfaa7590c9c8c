"""Parameter bookkeeping shared by every model: weight-decay groups and parameter counts.

Parameters that must not be weight-decayed (norm gains, biases, SSM ``A_log`` and ``D``) are marked by
:func:`no_weight_decay` or are one-dimensional; parameters that train at a multiple of the base learning rate are
marked by :func:`scale_learning_rate`; :func:`parameter_groups` splits a model accordingly.
"""

from __future__ import annotations

from typing import Any

from torch import nn

EMBEDDING_PREFIXES = ("token_embeddings.", "position_embeddings.")


def no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Mark ``param`` as excluded from weight decay (e.g. SSM ``A_log``) and return it."""
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


def scale_learning_rate(param: nn.Parameter, factor: float) -> nn.Parameter:
    """Mark ``param`` to train at ``factor`` times the base learning rate (e.g. mHC mixing logits) and return it.

    :func:`parameter_groups` gives such parameters a group with ``lr_scale=factor``, which
    :func:`~cs336_basics.optim.schedules.apply_learning_rate` multiplies into the scheduled rate at every step.
    """
    param._lr_scale = float(factor)  # type: ignore[attr-defined]
    return param


def wants_weight_decay(param: nn.Parameter) -> bool:
    """Matrices decay; vectors (norm gains, biases, ``D``) and explicitly marked parameters do not."""
    return param.ndim >= 2 and not getattr(param, "_no_weight_decay", False)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one with ``weight_decay``, one with none, then one per (decay, ``lr_scale``) pair
    for parameters marked by :func:`scale_learning_rate` (none unless a model marks some)."""
    decay, no_decay = [], []
    scaled: dict[tuple[bool, float], list[nn.Parameter]] = {}
    for param in model.parameters():
        if not param.requires_grad:
            continue
        decays, scale = wants_weight_decay(param), getattr(param, "_lr_scale", 1.0)
        if scale != 1.0:
            scaled.setdefault((decays, scale), []).append(param)
        else:
            (decay if decays else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        *(
            {"params": params, "weight_decay": weight_decay if decays else 0.0, "lr_scale": scale}
            for (decays, scale), params in scaled.items()
        ),
    ]


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Total, embedding and non-embedding parameter counts.

    Embedding parameters are the input lookup tables (token and learned position embeddings). An untied output
    head counts as non-embedding, as in Kaplan et al. (2020); tied weights are counted once.
    """
    seen: set[int] = set()
    total = embedding = 0
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if name.startswith(EMBEDDING_PREFIXES):
            embedding += param.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}
