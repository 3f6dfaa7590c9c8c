"""Batch sources the training loop draws from: token streams (language modelling) and synthetic tasks.

Both sources take an explicit ``torch.Generator`` so the data order is part of the resumable training state, and
both know the process's ``rank`` / ``world_size``: every process draws the *same* global batch from an identically
seeded generator and keeps its own contiguous slice of rows. Data-parallel training with N processes therefore sees
exactly the batches a single process would see, which makes DDP runs comparable (and testable) against one process.

Token streams train on ``window_mode="random"`` windows (uniform starts from the loop's torch generator, exactly
``get_batch``) or ``"sequential"`` ones (a :class:`~cs336_basics.data.windows.TokenWindows` walk with a stride, whose
position is checkpointed through ``state_dict``). With ``fixed_eval`` the periodic evaluation scores the first
non-overlapping validation windows, the same ones every time, instead of random (possibly overlapping) ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch

from cs336_basics.data.batching import get_batch
from cs336_basics.data.windows import TokenWindows, iter_eval_batches

TASK_EVAL_TOKENS = 200_000  # held-out tokens a synthetic task's final evaluation scores when no cap is given
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]  # inputs (B, T), targets (B, T), answer mask or None


class BatchSource(Protocol):
    """What the training loop needs from a data source."""

    seq_len: int

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch: ...

    def val_batch(self, batch_size: int, generator: torch.Generator) -> Batch: ...

    def val_windows(self, batch_size: int, max_tokens: int | None) -> Iterator[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def _rank_slice(rows: int, rank: int, world_size: int) -> slice:
    if rows % world_size:
        raise ValueError(f"batch of {rows} rows cannot be split over {world_size} processes; use a multiple")
    share = rows // world_size
    return slice(rank * share, (rank + 1) * share)


class TokenBatches:
    """Windows from 1-D token arrays (numpy arrays or memmaps) for next-token prediction.

    ``stride`` (tokens; default ``context_length``) and ``shuffle`` (a new order every epoch) apply to
    ``window_mode="sequential"``, which is seeded by ``seed``; ``fixed_eval`` selects fixed periodic-eval windows.
    """

    def __init__(
        self,
        train: np.ndarray,
        val: np.ndarray,
        context_length: int,
        device: str | torch.device,
        rank: int = 0,
        world_size: int = 1,
        window_mode: str = "random",
        stride: int | None = None,
        shuffle: bool = False,
        seed: int = 0,
        fixed_eval: bool = False,
    ) -> None:
        for split, tokens in (("train", train), ("validation", val)):
            if len(tokens) <= context_length:
                raise ValueError(
                    f"the {split} split has {len(tokens)} tokens, fewer than context_length+1={context_length + 1}; "
                    "use more data or a shorter context"
                )
        self.train, self.val, self.seq_len = train, val, context_length
        self.device, self.rank, self.world_size = device, rank, world_size
        if window_mode not in ("random", "sequential"):
            raise ValueError(f"window_mode must be 'random' or 'sequential', got {window_mode!r}")
        self.window_mode, self.stride, self.shuffle, self.seed = window_mode, stride, shuffle, seed
        self.fixed_eval = fixed_eval
        self._windows: TokenWindows | None = None
        self._pending_state: dict[str, Any] | None = None

    def _sequential(self, batch_size: int) -> TokenWindows:
        """The sequential sampler for global batches of ``batch_size`` (built on first use, then restored)."""
        if self._windows is None:
            self._windows = TokenWindows(
                self.train, self.seq_len, batch_size, "sequential", self.stride, self.shuffle, self.seed
            )
            if self._pending_state is not None:
                self._windows.load_state_dict(self._pending_state)
        if self._windows.batch_size != batch_size:
            raise ValueError(
                f"sequential windows were built for batch_size {self._windows.batch_size}, not {batch_size}"
            )
        return self._windows

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        if self.window_mode == "random":
            inputs, targets = get_batch(self.train, batch_size, self.seq_len, "cpu", generator=generator)
        else:
            inputs, targets = self._sequential(batch_size).next_batch("cpu")
        rows = _rank_slice(batch_size, self.rank, self.world_size)
        return inputs[rows].to(self.device), targets[rows].to(self.device), None

    def val_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A whole (unsharded) batch: every process evaluates the same data and reaches the same decisions."""
        inputs, targets = get_batch(self.val, batch_size, self.seq_len, "cpu", generator=generator)
        return inputs.to(self.device), targets.to(self.device), None

    def val_windows(self, batch_size: int, max_tokens: int | None) -> Iterator[Batch]:
        """Non-overlapping windows over the validation split (at most ``max_tokens`` predicted tokens; None: all)."""
        for inputs, targets in iter_eval_batches(self.val, self.seq_len, batch_size, max_tokens, self.device):
            yield inputs, targets, None

    def state_dict(self) -> dict[str, Any]:
        """The sequential sampler's position (random windows live in the loop's checkpointed generator: empty)."""
        if self.window_mode == "random":
            return {}
        if self._windows is None:
            return dict(self._pending_state or {})
        return self._windows.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.window_mode == "random" or not state:
            return
        self._pending_state = state
        if self._windows is not None:
            self._windows.load_state_dict(state)


class TaskBatches:
    """Batches from a synthetic task (``cs336_basics.data.synthetic``): accuracy counts answer positions only."""

    fixed_eval = False

    def __init__(self, task: Any, device: str | torch.device, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.task, self.seq_len, self.device = task, task.seq_len, device
        self.rank, self.world_size, self.seed = rank, world_size, seed

    def train_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        inputs, targets, mask = self.task.sample_batch(batch_size, generator)
        rows = _rank_slice(batch_size, self.rank, self.world_size)
        return inputs[rows].to(self.device), targets[rows].to(self.device), mask[rows].to(self.device)

    def val_batch(self, batch_size: int, generator: torch.Generator) -> Batch:
        """A whole (unsharded) batch: every process evaluates the same data and reaches the same decisions."""
        inputs, targets, mask = self.task.sample_batch(batch_size, generator)
        return inputs.to(self.device), targets.to(self.device), mask.to(self.device)

    def val_windows(self, batch_size: int, max_tokens: int | None) -> Iterator[Batch]:
        """A fixed held-out set of ``max_tokens / seq_len`` examples, drawn from its own seeded generator.

        A task has no finite validation split, so ``None`` means ``TASK_EVAL_TOKENS``.
        """
        generator = torch.Generator().manual_seed(self.seed + 1_000_003)
        remaining = max(1, (TASK_EVAL_TOKENS if max_tokens is None else max_tokens) // self.seq_len)
        while remaining > 0:
            rows = min(batch_size, remaining)
            inputs, targets, mask = self.task.sample_batch(rows, generator)
            remaining -= rows
            yield inputs.to(self.device), targets.to(self.device), mask.to(self.device)

    def state_dict(self) -> dict[str, Any]:
        """Tasks sample from the loop's checkpointed generator: nothing of their own to save."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
