"""Loss, perplexity and answer accuracy of a language model on held-out batches.

For language modelling every position is scored. For synthetic tasks (an answer mask is given) the loss and the
accuracy are taken over the answer positions only, since the rest of the sequence is unpredictable by design.
Averages are token-weighted, so a short last batch counts for what it holds.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cs336_basics.nn.functional import cross_entropy
from cs336_basics.training.batches import Batch


def scored_logits(model: torch.nn.Module, inputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The model's logits at the positions that are scored: ``(B, T, V)`` without a mask, ``(n, V)`` with one.

    A model whose class sets ``accepts_score_mask`` (the :class:`~cs336_basics.models.language_model.LanguageModel`)
    runs its output layer on the ``n`` masked positions only: on MQAR at vocabulary 8192 that layer would otherwise
    cost several times the rest of a small model, for 4 answers in 64 positions.
    """
    if mask is None:
        return model(inputs)
    if getattr(model, "accepts_score_mask", False):
        return model(inputs, score_mask=mask)
    return model(inputs)[mask]


def batch_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over scored positions and how many positions were scored.

    logits (B, T, V) or, already restricted to the mask (:func:`scored_logits`), (n, V); targets (B, T);
    mask (B, T) bool or None (None scores every position).
    """
    logits = logits.float()
    if mask is None:
        return cross_entropy(logits, targets), targets.numel()
    if logits.ndim == 2:
        return cross_entropy(logits, targets[mask]), int(mask.sum())
    return cross_entropy(logits[mask], targets[mask]), int(mask.sum())


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> dict[str, float]:
    """Token-weighted loss, perplexity and (with answer masks) accuracy over ``batches``."""
    was_training = model.training
    model.eval()
    total_loss, total_tokens, correct, answers = 0.0, 0, 0, 0
    try:
        for inputs, targets, mask in batches:
            with autocast():
                logits = scored_logits(model, inputs, mask)  # (B, T, V), or (n, V) at the answers
            loss, tokens = batch_loss(logits, targets, mask)
            total_loss += float(loss) * tokens
            total_tokens += tokens
            if mask is not None:
                correct += int((logits.argmax(dim=-1) == targets[mask]).sum())
                answers += int(mask.sum())
    finally:
        model.train(was_training)
    if total_tokens == 0:
        raise ValueError("evaluate: the batches held no scored positions; check the validation data")
    loss = total_loss / total_tokens
    result = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": float(total_tokens)}
    if answers:
        result["accuracy"] = correct / answers
    return result


def full_validation(
    model: torch.nn.Module,
    batches: Any,
    batch_size: int,
    max_tokens: int | None,
    autocast: Callable[[], Any] = contextlib.nullcontext,
) -> dict[str, float]:
    """The final evaluation: the whole validation split of ``batches`` (a ``BatchSource``) in non-overlapping windows
    of ``batch_size`` rows, capped at ``max_tokens`` (None: no cap). The trainer's end-of-run figure and the
    ``evaluate`` command both come from here."""
    return evaluate(model, batches.val_windows(batch_size, max_tokens), autocast)
