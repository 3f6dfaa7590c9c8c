"""The training loop: gradient accumulation, clipping, mixed precision, evaluation, early stopping, checkpoints.

Design choices:
- **Resumable by construction.** A checkpoint is written at a step boundary and holds the model, the optimizer, the
  loop state (step, tokens seen, best validation loss, patience counter, wall-clock so far), the data generator's
  state, the torch / numpy / python RNG states, the GradScaler and the caller's config. Resuming restores all of it,
  so on CPU a resumed run reproduces the uninterrupted one bit for bit. The schedule is a pure function of the step.
- **Fail loudly on divergence.** A non-finite loss or gradient norm stops the run *before* the optimizer step
  (the last good checkpoint stays the latest) with :class:`NonFiniteError` naming the step and what to try.
- **Data parallel without special cases.** The caller may pass a DDP-wrapped module as ``train_module``; gradient
  sync is skipped on all but the last micro-batch, logged losses are averaged over processes, and evaluation runs on
  the plain model with whole (unsharded) batches so every process takes the same early-stopping decision.
- The loop never reads files or flags: it reports through ``log(record)`` and the caller decides where records go.
- **Stoppable at a step boundary.** ``stop_requested()`` (set by the caller, e.g. from
  :class:`~cs336_basics.training.interrupt.StopSignals`) is polled after every step; when it returns a signal number
  the loop writes a checkpoint and raises :class:`~cs336_basics.training.interrupt.TrainingInterrupted`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from cs336_basics.optim.clipping import clip_gradients, global_grad_norm
from cs336_basics.optim.schedules import apply_learning_rate
from cs336_basics.training.batches import BatchSource
from cs336_basics.training.checkpoint_files import prune_checkpoints
from cs336_basics.training.evaluation import batch_loss, evaluate, full_validation, scored_logits
from cs336_basics.training.interrupt import TrainingInterrupted

VAL_SEED_OFFSET = 7919


class NonFiniteError(RuntimeError):
    """The loss or the gradient norm became NaN/inf at ``step``; raised before the optimizer step."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


@dataclass
class LoopSettings:
    """How to train: steps, batch shape, evaluation cadence, checkpoints and numerics."""

    max_steps: int
    batch_size: int
    grad_accum_steps: int = 1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    early_stopping_patience: int = 0
    target_accuracy: float | None = None  # stop once the periodic evaluation's answer accuracy reaches this
    log_every: int = 10
    seed: int = 0
    precision: str = "fp32"
    eval_at_start: bool = False  # evaluate once before the first step (the loss at initialisation)


@dataclass
class LoopState:
    """Everything about the loop's progress that a checkpoint must carry besides model and optimizer."""

    step: int = 0
    tokens_seen: int = 0
    best_val_loss: float = math.inf
    evals_since_best: int = 0
    elapsed_s: float = 0.0
    stopped_early: bool = False
    last_val_loss: float = math.nan
    target_reached_step: int | None = None  # first step whose evaluation reached settings.target_accuracy


def rng_states() -> dict[str, Any]:
    """The global RNG states (torch CPU/CUDA, numpy legacy, python) in a form ``weights_only`` loading accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore what :func:`rng_states` captured."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class Trainer:
    """Runs the optimisation of ``model`` on ``batches`` according to ``settings``.

    ``lr_at(step)`` gives the learning rate of a step; ``log(record)`` receives dicts with ``kind`` ``"train"`` or
    ``"eval"``; checkpoints go to ``checkpoint_dir`` when it is given (rank 0 only writes: ``is_writer``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_at: Callable[[int], float],
        batches: BatchSource,
        settings: LoopSettings,
        device: torch.device,
        log: Callable[[dict[str, Any]], None] = lambda record: None,
        checkpoint_dir: Path | None = None,
        train_module: torch.nn.Module | None = None,
        extra_state: dict[str, Any] | None = None,
        is_writer: bool = True,
    ) -> None:
        self.model, self.optimizer, self.lr_at, self.batches = model, optimizer, lr_at, batches
        self.settings, self.device, self.log = settings, device, log
        self.checkpoint_dir, self.is_writer = checkpoint_dir, is_writer
        self.train_module = train_module if train_module is not None else model
        self.extra_state = extra_state or {}
        self.state = LoopState()
        self.generator = torch.Generator().manual_seed(settings.seed)
        dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[settings.precision]
        self.autocast_dtype = dtype
        # fp16 needs loss scaling; the scaler follows the device, so its logic also runs (and is tested) on CPU
        self.scaler = torch.amp.GradScaler(device.type) if settings.precision == "fp16" else None
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.stop_requested: Callable[[], int | None] = lambda: None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    # ----- checkpoints -------------------------------------------------------------------------------------------
    def save(self) -> Path | None:
        """Write a checkpoint for the current step (rank 0 only) and prune old ones."""
        from cs336_basics.training.checkpoint import save_checkpoint

        if self.checkpoint_dir is None or not self.is_writer:
            return None
        self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        path = self.checkpoint_dir / f"step_{self.state.step:07d}.pt"
        extra = {
            "loop": dataclasses.asdict(self.state),
            "data_generator": self.generator.get_state(),
            "data_windows": self.batches.state_dict(),
            "rng": rng_states(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            **self.extra_state,
        }
        save_checkpoint(self.model, self.optimizer, self.state.step, path, extra=extra)
        prune_checkpoints(self.checkpoint_dir, self.settings.keep_checkpoints)
        return path

    def resume(
        self,
        path: Path,
        check_extra: Callable[[dict[str, Any]], None] | None = None,
        payload: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Restore model, optimizer and loop state from the checkpoint at ``path``; returns its ``extra`` dict.

        The file is read once (not at all when the caller already read it into ``payload``); ``check_extra(extra)``
        runs before anything is restored, so a caller can refuse a checkpoint (e.g. one trained with another config)
        before shapes are compared.
        """
        from cs336_basics.training.checkpoint import read_checkpoint, restore_checkpoint

        payload = payload if payload is not None else read_checkpoint(path)
        extra = payload["extra"]
        if check_extra is not None:
            check_extra(extra)
        step = restore_checkpoint(payload, self.model, self.optimizer, name=str(path))
        self.state = LoopState(**extra["loop"])
        if self.state.step != step:
            raise ValueError(f"checkpoint {path} is inconsistent: iteration {step} vs loop step {self.state.step}")
        self.generator.set_state(extra["data_generator"])
        self.batches.load_state_dict(extra.get("data_windows", {}))
        set_rng_states(extra["rng"])
        if self.scaler is not None and extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        return extra

    # ----- one optimisation step -----------------------------------------------------------------------------------
    def _mean_over_processes(self, value: torch.Tensor) -> float:
        if self.world_size > 1:
            value = value.detach().clone()
            dist.all_reduce(value)
            value /= self.world_size
        return float(value)

    def _scored_logits(self, inputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``train_module``'s logits at the scored positions (a wrapper such as DDP hides the model's attributes, so
        ``accepts_score_mask`` is read from the bare model)."""
        if mask is not None and getattr(self.model, "accepts_score_mask", False):
            return self.train_module(inputs, score_mask=mask)
        return scored_logits(self.train_module, inputs, mask)

    def train_step(self) -> dict[str, float]:
        """One optimizer step over ``grad_accum_steps`` micro-batches; returns loss, grad norm and lr."""
        s, step = self.settings, self.state.step
        lr = self.lr_at(step)
        apply_learning_rate(self.optimizer, lr)
        self.train_module.train()
        total_loss = torch.zeros((), device=self.device)
        for micro in range(s.grad_accum_steps):
            inputs, targets, mask = self.batches.train_batch(s.batch_size, self.generator)
            last = micro == s.grad_accum_steps - 1
            skip_sync = not last and hasattr(self.train_module, "no_sync")
            with self.train_module.no_sync() if skip_sync else contextlib.nullcontext():
                with self.autocast():
                    logits = self._scored_logits(inputs, mask)  # (B, T, V), or (n, V) at the scored positions
                    loss = batch_loss(logits, targets, mask)[0] + self.model.auxiliary_loss()
                scaled = loss / s.grad_accum_steps
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total_loss += loss.detach().float() / s.grad_accum_steps
        loss_value = self._mean_over_processes(total_loss)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = clip_gradients(params, s.grad_clip) if s.grad_clip > 0 else float(global_grad_norm(params))
        if not math.isfinite(loss_value) or (self.scaler is None and not math.isfinite(grad_norm)):
            what = "loss" if not math.isfinite(loss_value) else "gradient norm"
            raise NonFiniteError(
                f"non-finite {what} at step {step + 1} (loss={loss_value}, grad_norm={grad_norm}); the optimizer "
                "step was skipped and the last good checkpoint kept. Try a lower optim.lr, optim.grad_clip=1.0, "
                "or a longer optim.warmup_steps",
                step + 1,
            )
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        self.state.tokens_seen += s.batch_size * s.grad_accum_steps * self.batches.seq_len
        return {"loss": loss_value, "grad_norm": grad_norm, "lr": lr}

    # ----- evaluation ------------------------------------------------------------------------------------------------
    def evaluate(self, num_batches: int | None = None) -> dict[str, float]:
        """Loss on ``eval_batches`` validation batches, the same ones at every evaluation.

        They are seeded random windows, or with ``batches.fixed_eval`` the first non-overlapping windows.
        """
        count, size = num_batches or self.settings.eval_batches, self.settings.batch_size
        if getattr(self.batches, "fixed_eval", False):
            return evaluate(
                self.model, self.batches.val_windows(size, count * size * self.batches.seq_len), self.autocast
            )
        generator = torch.Generator().manual_seed(self.settings.seed + VAL_SEED_OFFSET)
        batches = (self.batches.val_batch(size, generator) for _ in range(count))
        return evaluate(self.model, batches, self.autocast)

    def full_evaluation(self, max_tokens: int | None) -> dict[str, float]:
        """Loss over the whole validation split in non-overlapping windows (capped at ``max_tokens`` unless None)."""
        return full_validation(self.model, self.batches, self.settings.batch_size, max_tokens, self.autocast)

    def _eval_and_track(self) -> None:
        result = self.evaluate()
        st = self.state
        st.last_val_loss = result["loss"]
        if result["loss"] < st.best_val_loss:
            st.best_val_loss, st.evals_since_best = result["loss"], 0
        else:
            st.evals_since_best += 1
        patience = self.settings.early_stopping_patience
        st.stopped_early = bool(patience) and st.evals_since_best >= patience
        target = self.settings.target_accuracy
        if target is not None and result.get("accuracy", -1.0) >= target:
            if st.target_reached_step is None:
                st.target_reached_step = st.step
            st.stopped_early = True
        record = {f"val_{k}": v for k, v in result.items() if k != "tokens"}
        self.log(
            {
                "kind": "eval",
                "step": st.step,
                "tokens_seen": st.tokens_seen,
                "elapsed_s": st.elapsed_s,
                **record,
                "best_val_loss": st.best_val_loss,
                **self._diagnostics(),
            }
        )

    def _diagnostics(self) -> dict[str, float]:
        diagnostics = getattr(self.model, "diagnostics", None)
        return {f"diag/{k}": float(v) for k, v in (diagnostics() if diagnostics else {}).items()}

    # ----- the loop --------------------------------------------------------------------------------------------------
    def fit(self) -> LoopState:
        """Train until ``max_steps`` or early stopping; evaluate and checkpoint on the way and at the end."""
        s, st = self.settings, self.state
        if s.eval_at_start and st.step == 0:
            self._eval_and_track()
        last_log_time, last_log_tokens, last_log_step = time.perf_counter(), st.tokens_seen, st.step
        while st.step < s.max_steps and not st.stopped_early:
            started = time.perf_counter()
            metrics = self.train_step()
            st.elapsed_s += time.perf_counter() - started
            final = st.step == s.max_steps
            if st.step % s.log_every == 0 or final:
                now = time.perf_counter()
                rate = (st.tokens_seen - last_log_tokens) / max(now - last_log_time, 1e-9)
                steps_rate = (st.step - last_log_step) / max(now - last_log_time, 1e-9)
                self.log(
                    {
                        "kind": "train",
                        "step": st.step,
                        "tokens_seen": st.tokens_seen,
                        "elapsed_s": st.elapsed_s,
                        "tokens_per_s": rate,
                        "steps_per_s": steps_rate,
                        **metrics,
                    }
                )
                last_log_time, last_log_tokens, last_log_step = now, st.tokens_seen, st.step
            if st.step % s.eval_every == 0 or final:
                started = time.perf_counter()
                self._eval_and_track()
                st.elapsed_s += time.perf_counter() - started
            done = final or st.stopped_early
            saved = None
            if (s.checkpoint_every and st.step % s.checkpoint_every == 0) or done:
                saved = self.save()
            if (signum := self.stop_requested()) is not None:
                raise TrainingInterrupted(signum, st.step, saved or self.save())
        return st
