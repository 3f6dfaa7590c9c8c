"""Training and evaluation windows over a 1-D token array, with a resumable position.

- Training (:class:`TokenWindows`): ``mode="random"`` draws every start uniformly (like ``get_batch``) from a seeded
  numpy generator; ``mode="sequential"`` walks starts ``0, stride, 2*stride, ...`` plus one final window aligned to
  the end, so every token is inside some window (``stride < context_length`` makes windows overlap, e.g.
  ``0.8 * context``). Sequential order can be reshuffled every epoch. ``state_dict``/``load_state_dict`` capture the
  position, epoch and generator state, so a resumed run reads exactly the batches an uninterrupted one would.
- Evaluation (:func:`eval_window_starts`, :func:`iter_eval_batches`): non-overlapping windows ``0, ctx, 2*ctx, ...``
  in order; each token is predicted at most once, and the set is the same every time.

A window at ``s`` gives inputs ``tokens[s : s + ctx]`` and targets ``tokens[s + 1 : s + ctx + 1]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch


def _check(num_tokens: int, context_length: int) -> None:
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    if num_tokens < context_length + 1:
        raise ValueError(f"{num_tokens} tokens are too few for one window of context_length {context_length} (+1)")


def _gather(tokens: np.ndarray, starts: np.ndarray, context_length: int, device: str | torch.device):
    idx = starts[:, None] + np.arange(context_length + 1)  # (B, T + 1)
    block = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    x, y = block[:, :-1], block[:, 1:]  # (B, T) each
    return x.contiguous().to(device), y.contiguous().to(device)


def sequential_window_starts(num_tokens: int, context_length: int, stride: int) -> np.ndarray:
    """Starts ``0, stride, ...`` and a last one at ``num_tokens - context_length - 1`` so the tail is covered."""
    _check(num_tokens, context_length)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    last = num_tokens - context_length - 1
    starts = np.arange(0, last + 1, stride, dtype=np.int64)
    return starts if starts[-1] == last else np.append(starts, last)


def eval_window_starts(num_tokens: int, context_length: int, max_tokens: int | None = None) -> np.ndarray:
    """Non-overlapping, deterministic validation window starts ``0, ctx, 2*ctx, ...``: ``(num_tokens - 1) // ctx``
    windows, each with its ``ctx + 1`` tokens inside the array. With ``max_tokens``, only the first
    ``max(1, max_tokens // ctx)`` of them (at most ``max_tokens`` predicted tokens, but never zero windows)."""
    _check(num_tokens, context_length)
    starts = np.arange(0, num_tokens - context_length, context_length, dtype=np.int64)
    return starts if max_tokens is None else starts[: max(1, max_tokens // context_length)]


def iter_eval_batches(
    tokens: np.ndarray,
    context_length: int,
    batch_size: int,
    max_tokens: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``(x, y)`` of ``(B, T)`` int64 over :func:`eval_window_starts` (in order; the last batch may be short).

    The one implementation of fixed validation windows: the trainer's final evaluation, its ``fixed_eval`` periodic
    evaluation and the studies that re-score finished runs all read the same windows.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    starts = eval_window_starts(len(tokens), context_length, max_tokens)
    for i in range(0, len(starts), batch_size):
        yield _gather(tokens, starts[i : i + batch_size], context_length, device)


class TokenWindows:
    """A resumable sampler of ``(inputs, targets)`` training batches; see the module docstring."""

    def __init__(
        self,
        tokens: np.ndarray,
        context_length: int,
        batch_size: int,
        mode: str = "random",
        stride: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
    ) -> None:
        if mode not in ("random", "sequential"):
            raise ValueError(f"mode must be 'random' or 'sequential', got {mode!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _check(len(tokens), context_length)
        self.tokens, self.context_length, self.batch_size = tokens, context_length, batch_size
        self.mode, self.shuffle, self.seed = mode, shuffle, seed
        self.stride = stride if stride is not None else context_length
        self.starts = (
            sequential_window_starts(len(tokens), context_length, self.stride) if mode == "sequential" else None
        )
        self._rng = np.random.default_rng(seed)
        self.position, self.epoch = 0, 0
        self._order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray | None:
        if self.starts is None:
            return None
        if not self.shuffle:
            return self.starts
        return self.starts[np.random.default_rng([self.seed, self.epoch]).permutation(len(self.starts))]

    def __len__(self) -> int:
        """Windows per epoch (sequential) or possible starts (random)."""
        return len(self.starts) if self.starts is not None else len(self.tokens) - self.context_length

    def next_starts(self) -> np.ndarray:
        """The next ``batch_size`` window starts (advancing the position)."""
        if self._order is None:
            return self._rng.integers(0, len(self.tokens) - self.context_length, self.batch_size)
        out = []
        while len(out) < self.batch_size:
            take = self._order[self.position : self.position + self.batch_size - len(out)]
            out.extend(take.tolist())
            self.position += len(take)
            if self.position >= len(self._order):
                self.position, self.epoch = 0, self.epoch + 1
                self._order = self._epoch_order()
        return np.array(out, dtype=np.int64)

    def next_batch(self, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``, each ``(batch_size, context_length)`` int64 on ``device``."""
        return _gather(self.tokens, self.next_starts(), self.context_length, device)

    def state_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "num_tokens": len(self.tokens),
            "context_length": self.context_length,
            "stride": self.stride,
            "shuffle": self.shuffle,
            "seed": self.seed,
            "position": self.position,
            "epoch": self.epoch,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("mode", "num_tokens", "context_length", "stride", "shuffle", "seed"):
            mine = len(self.tokens) if key == "num_tokens" else getattr(self, key)
            if state[key] != mine:
                raise ValueError(
                    f"window state was saved with {key}={state[key]!r} but this sampler has {mine!r}; "
                    "resume with the same data and window settings"
                )
        self.position, self.epoch = int(state["position"]), int(state["epoch"])
        self._rng.bit_generator.state = state["rng_state"]
        self._order = self._epoch_order()
