"""Learning-rate schedules as pure functions of the iteration number.

A schedule is a function ``it -> lr`` with no hidden state, so a resumed run recomputes the exact rate from the
saved iteration. The trainer calls one every step and writes the result into the optimizer with
:func:`apply_learning_rate`.

- :func:`cosine_with_warmup`: the CS336 schedule. Linear warmup ``it / warmup_iters * max`` for ``it < warmup_iters``,
  a half cosine from ``max`` down to ``min`` over ``[warmup_iters, cosine_cycle_iters]``, then ``min``.
- :func:`warmup_stable_decay` (WSD, Hu et al. 2024, "MiniCPM"): the same warmup, a flat stretch at ``max``, then a
  linear or cosine decay to ``min`` over ``decay_iters``, then ``min``. The flat stretch lets one run branch into
  several decay lengths from a shared checkpoint.
- :func:`constant_with_warmup`: the same warmup, then ``max`` for ever (for checkpoint averaging, or WSD branches).
"""

from __future__ import annotations

import math
from typing import Literal

import torch


def _check_common(it: int, max_learning_rate: float, min_learning_rate: float, warmup_iters: int) -> None:
    if it < 0:
        raise ValueError(f"iteration must be >= 0, got it={it}")
    if warmup_iters < 0:
        raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
    if not 0.0 <= min_learning_rate <= max_learning_rate:
        raise ValueError(
            f"need 0 <= min_learning_rate <= max_learning_rate, got min={min_learning_rate}, max={max_learning_rate}"
        )


def _cosine_between(progress: float, start: float, end: float) -> float:
    """Half cosine from ``start`` (progress 0) to ``end`` (progress 1)."""
    return end + 0.5 * (1.0 + math.cos(math.pi * progress)) * (start - end)


def cosine_with_warmup(
    it: int,
    max_learning_rate: float,
    min_learning_rate: float,
    warmup_iters: int,
    cosine_cycle_iters: int,
) -> float:
    """Learning rate at iteration ``it``: linear warmup, cosine annealing to ``min_learning_rate``, then constant.

    ``cosine_cycle_iters`` is the iteration at which the cosine reaches the minimum (counted from 0, warmup included).
    """
    _check_common(it, max_learning_rate, min_learning_rate, warmup_iters)
    if cosine_cycle_iters < warmup_iters:
        raise ValueError(
            f"cosine_cycle_iters ({cosine_cycle_iters}) must be >= warmup_iters ({warmup_iters}): "
            "the cosine phase starts where warmup ends"
        )
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    if it >= cosine_cycle_iters:
        return min_learning_rate
    progress = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)
    return _cosine_between(progress, max_learning_rate, min_learning_rate)


def warmup_stable_decay(
    it: int,
    max_learning_rate: float,
    min_learning_rate: float,
    warmup_iters: int,
    stable_iters: int,
    decay_iters: int,
    decay_shape: Literal["linear", "cosine"] = "linear",
) -> float:
    """Learning rate at iteration ``it`` for warmup -> stable at max -> decay to min -> min.

    Phases: ``[0, warmup)`` linear warmup, ``[warmup, warmup + stable)`` at ``max_learning_rate``,
    ``[warmup + stable, warmup + stable + decay)`` decaying (``decay_shape`` "linear" or "cosine"), then the minimum.
    """
    _check_common(it, max_learning_rate, min_learning_rate, warmup_iters)
    if stable_iters < 0 or decay_iters < 0:
        raise ValueError(f"stable_iters and decay_iters must be >= 0, got {stable_iters} and {decay_iters}")
    if decay_shape not in ("linear", "cosine"):
        raise ValueError(f"decay_shape must be 'linear' or 'cosine', got {decay_shape!r}")
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    decay_start = warmup_iters + stable_iters
    if it < decay_start:
        return max_learning_rate
    if it >= decay_start + decay_iters:
        return min_learning_rate
    progress = (it - decay_start) / decay_iters
    if decay_shape == "linear":
        return max_learning_rate + progress * (min_learning_rate - max_learning_rate)
    return _cosine_between(progress, max_learning_rate, min_learning_rate)


def constant_with_warmup(it: int, max_learning_rate: float, warmup_iters: int) -> float:
    """Learning rate at iteration ``it`` for the shared linear warmup followed by a constant ``max_learning_rate``."""
    _check_common(it, max_learning_rate, max_learning_rate, warmup_iters)
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    return max_learning_rate


def apply_learning_rate(optimizer: torch.optim.Optimizer, learning_rate: float) -> None:
    """Set every group's ``lr`` to ``learning_rate`` times the group's optional ``lr_scale`` (default 1).

    ``lr_scale`` keeps per-group ratios (e.g. a smaller rate for embeddings) intact while one schedule drives them.
    """
    for group in optimizer.param_groups:
        group["lr"] = learning_rate * group.get("lr_scale", 1.0)
