"""The interface every language model in this package implements.

The training loop, evaluation, decoding and the experiment runner only ever talk to a model through this
interface, so any architecture (Transformer, Mamba, hybrids, Hymba, MoE variants) can be trained, resumed and
sampled the same way.

- ``forward(input_ids, cache=None)`` maps token ids ``(batch, seq)`` to logits ``(batch, seq, vocab)``: one logit
  row per *input* position (internal extras such as Hymba meta tokens are stripped before returning).
- ``make_cache(batch_size, max_seq_len)`` returns a decoding cache; calling ``forward(ids, cache=cache)`` then treats
  ``ids`` as the continuation of what the cache has already seen and updates the cache in place, so each new token
  costs one position (KV cache for attention, recurrent state for SSMs). Models that cannot decode incrementally
  keep the default, which raises ``NotImplementedError``; ``generate`` then recomputes the full prefix.
- ``auxiliary_loss()`` returns the (already weighted) auxiliary loss of the last forward pass, e.g. MoE
  load-balancing and router z-losses; the trainer adds it to the cross-entropy. Zero by default.
- ``diagnostics()`` returns architecture-specific scalars for the logs (Hymba branch shares, MoE expert load).

Parameters that must not be weight-decayed (norm gains, biases, SSM ``A_log`` and ``D``) are marked by
:func:`no_weight_decay` or are one-dimensional; :func:`parameter_groups` splits a model accordingly.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

EMBEDDING_PREFIXES = ("token_embeddings.", "position_embeddings.")


def no_weight_decay(param: nn.Parameter) -> nn.Parameter:
    """Mark ``param`` as excluded from weight decay (e.g. SSM ``A_log``) and return it."""
    param._no_weight_decay = True  # type: ignore[attr-defined]
    return param


def wants_weight_decay(param: nn.Parameter) -> bool:
    """Matrices decay; vectors (norm gains, biases, ``D``) and explicitly marked parameters do not."""
    return param.ndim >= 2 and not getattr(param, "_no_weight_decay", False)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Optimizer parameter groups: one with ``weight_decay``, one with none."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if wants_weight_decay(param) else no_decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
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


class LanguageModel(nn.Module):
    """Base class providing the defaults of the language-model interface described in the module docstring."""

    vocab_size: int

    def make_cache(self, batch_size: int, max_seq_len: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not support incremental decoding")

    def auxiliary_loss(self) -> torch.Tensor:
        return torch.zeros((), device=next(self.parameters()).device)

    def diagnostics(self) -> dict[str, float]:
        """Per-expert load and router losses of any MoE feed-forwards plugged into the model; empty otherwise."""
        from cs336_basics.models.moe import collect_moe_diagnostics  # lazy: moe builds on the layers, not on base

        return collect_moe_diagnostics(self)
