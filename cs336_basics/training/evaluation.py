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


def batch_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over scored positions and how many positions were scored.

    logits (B, T, V), targets (B, T), mask (B, T) bool or None (None scores every position).
    """
    logits = logits.float()
    if mask is None:
        return cross_entropy(logits, targets), targets.numel()
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
                logits = model(inputs)  # (B, T, V)
            loss, tokens = batch_loss(logits, targets, mask)
            total_loss += float(loss) * tokens
            total_tokens += tokens
            if mask is not None:
                predictions = logits.argmax(dim=-1)
                correct += int((predictions == targets)[mask].sum())
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
