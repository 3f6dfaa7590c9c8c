"""Run one experiment end to end: data, model, optimizer, training, final evaluation and the run directory.

The order matters for the "validate before writing" promise: the data is prepared and the model is built (so bad
sizes or unknown options fail as config errors) *before* ``runs/<name>/`` is created. Under ``torchrun`` every
process trains (DDP: gloo on CPU, nccl on GPU) and only rank 0 logs and writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from assignment_experiments import resume as resume_checks
from assignment_experiments.config import ConfigError, ExperimentConfig
from assignment_experiments.data_sources import PreparedData, prepare_data
from assignment_experiments.outputs import finish_run, training_flops_per_token
from assignment_experiments.resolved_config import resolve_config
from assignment_experiments.run_files import (
    CONFIG_CHANGES,
    atomic_write_text,
    record_config_changes,
    remove_temporary_checkpoints,
    rewind_metrics,
)
from assignment_experiments.run_loading import save_run_tokenizer
from assignment_experiments.run_lock import RunLock
from assignment_experiments.threads import set_threads
from assignment_experiments.tracking import RssSampler, Tracker, environment_info
from cs336_basics.fs_checks import check_writable_dir
from cs336_basics.models.base import count_parameters, parameter_groups
from cs336_basics.models.language_model import LanguageModel
from cs336_basics.models.moe import moe_parameter_counts
from cs336_basics.optim.adamw import AdamW
from cs336_basics.optim.schedules import constant_with_warmup, cosine_with_warmup, warmup_stable_decay
from cs336_basics.training.checkpoint_files import list_checkpoints
from cs336_basics.training.interrupt import StopSignals, TrainingInterrupted, agreed_stop
from cs336_basics.training.loop import LoopSettings, NonFiniteError, Trainer


class RunError(RuntimeError):
    """A run-level problem (existing run without --resume, ...); the message says what to do."""


def make_model(config: ExperimentConfig, vocab_size: int) -> LanguageModel:
    """Build the model, turning constructor complaints into config errors."""
    if config.model.vocab_size is not None and config.model.vocab_size < vocab_size:
        raise ConfigError(
            f"config error: model.vocab_size={config.model.vocab_size} is smaller than the data's vocabulary "
            f"({vocab_size}); remove model.vocab_size or raise it"
        )
    try:
        return LanguageModel(config.model.spec(config.model.vocab_size or vocab_size))
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config error: model: {str(error).splitlines()[0]}") from None


def learning_rate_schedule(config: ExperimentConfig) -> Any:
    """``step -> lr`` for the configured schedule (a pure function of the step, so resuming needs no state)."""
    o, steps = config.optim, config.train.max_steps
    if o.schedule == "cosine":
        return partial(
            cosine_with_warmup,
            max_learning_rate=o.lr,
            min_learning_rate=o.min_lr,
            warmup_iters=o.warmup_steps,
            cosine_cycle_iters=steps,
        )
    if o.schedule == "wsd":
        return partial(
            warmup_stable_decay,
            max_learning_rate=o.lr,
            min_learning_rate=o.min_lr,
            warmup_iters=o.warmup_steps,
            stable_iters=steps - o.warmup_steps - o.decay_steps,
            decay_iters=o.decay_steps,
            decay_shape=o.decay_shape,
        )
    return partial(constant_with_warmup, max_learning_rate=o.lr, warmup_iters=o.warmup_steps)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _device(choice: str, rank: int) -> torch.device:
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config error: train.device='cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    torch.cuda.set_device(rank % torch.cuda.device_count())
    return torch.device("cuda", rank % torch.cuda.device_count())


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _checkpoint_layers(model: torch.nn.Module) -> None:
    """Recompute each layer's activations in the backward pass instead of storing them."""
    from torch.utils.checkpoint import checkpoint

    layers = getattr(model, "layers", None)
    if layers is None:
        raise ConfigError("config error: train.activation_checkpointing needs a model with .layers; switch it off")
    for layer in layers:
        layer.forward = partial(checkpoint, layer.forward, use_reentrant=False)


def prepare_run_dir(runs_dir: Path, name: str, resume: bool) -> Path:
    """The run directory; refuses to overwrite a run, and to ``--resume`` one that does not exist."""
    run_dir = runs_dir / name
    if resume:
        if not run_dir.is_dir():
            existing = sorted(p.name for p in runs_dir.iterdir() if p.is_dir())[:8] if runs_dir.is_dir() else []
            raise RunError(
                f"--resume: there is no run {run_dir} (runs there: {', '.join(existing) or 'none'}); check --name "
                "and --runs-dir, or drop --resume to start it"
            )
        return run_dir
    started = list_checkpoints(run_dir / "checkpoints") or any(
        (run_dir / f).exists() for f in ("summary.json", "metrics.jsonl")
    )
    if started:
        raise RunError(f"run directory {run_dir} already holds a run; pass --resume to continue it or a new --name")
    return run_dir


def run_experiment(
    config: ExperimentConfig,
    name: str,
    runs_dir: Path = Path("runs"),
    resume: bool = False,
    allow_changes: list[str] | None = None,
) -> dict[str, Any] | None:
    """Train and evaluate one configured run; returns the summary on rank 0 (None on other ranks).

    SIGTERM / SIGINT stop it at a step boundary with a checkpoint (:class:`TrainingInterrupted`); the run directory
    is locked against a second process for the whole run. ``allow_changes`` names ``optim.*`` keys that may differ
    from the checkpoint's config on resume.
    """
    with StopSignals() as signals, contextlib.ExitStack() as cleanup:
        try:
            return _run(config, name, Path(runs_dir), resume, allow_changes or [], signals, cleanup)
        except (TrainingInterrupted, NonFiniteError) as stop:
            found = list_checkpoints(Path(runs_dir) / name / "checkpoints")  # what a resume would start from
            if getattr(stop, "checkpoint", None) is None:  # a signal outside the loop, or a divergence
                stop.checkpoint = found[-1] if found else None
            stop.run_name = name
            raise


def _run(
    config: ExperimentConfig,
    name: str,
    runs_dir: Path,
    resume: bool,
    allow_changes: list[str],
    signals: StopSignals,
    cleanup: contextlib.ExitStack,
) -> dict[str, Any] | None:
    rank, world = _distributed()
    t, o = config.train, config.optim
    if t.batch_size % world:
        raise ConfigError(f"config error: train.batch_size={t.batch_size} is not divisible by {world} processes")
    set_threads(t.num_threads, announce=print if rank == 0 else lambda message: None)
    device = _device(t.device, rank)
    if t.precision == "fp16" and device.type != "cuda":
        raise ConfigError("config error: train.precision='fp16' needs CUDA (GradScaler); use 'fp32' or 'bf16' on CPU")
    if rank == 0:  # before minutes of data preparation: can the results be written at all?
        check_writable_dir(runs_dir, "--runs-dir")
        if config.data.source not in ("tokens", "synthetic"):
            check_writable_dir(config.data.cache_dir, "data.cache_dir")
    _seed_everything(t.seed)
    try:
        data: PreparedData = prepare_data(
            config.data,
            config.model.context_length,
            device,
            rank,
            world,
            t.seed,
            progress=rank == 0 and config.logging.progress_bar,
        )
    except ConfigError:
        raise
    except (FileNotFoundError, ValueError) as error:  # missing, empty or non-UTF-8 data: a data-config problem
        raise ConfigError(f"config error: data: {str(error).splitlines()[0]}") from None
    if data.batches.seq_len > config.model.context_length:
        raise ConfigError(
            f"config error: the task's sequences ({data.batches.seq_len}) exceed model.context_length="
            f"{config.model.context_length}; raise context_length"
        )
    model = make_model(config, data.vocab_size).to(device)
    resolved = resolve_config(config, config.model.vocab_size or data.vocab_size)  # what config.json records
    run_dir = runs_dir / name
    writer = rank == 0
    if resume:
        prepare_run_dir(runs_dir, name, resume)  # a missing run is refused before the lock would create its folder
    checkpoint, payload = None, None
    if writer:
        cleanup.enter_context(RunLock(run_dir))  # before reading or writing anything in the run directory
        prepare_run_dir(runs_dir, name, resume)  # under the lock: another process may have filled it meanwhile
        remove_temporary_checkpoints(run_dir / "checkpoints")
    if resume:
        checkpoint, payload = resume_checks.newest_loadable_checkpoint(run_dir / "checkpoints", move_aside=writer)
    identity = resume_checks.data_identity(config, data.meta)
    counts = count_parameters(model)
    counts["active"] = moe_parameter_counts(model)["active"]  # per token: only top_k of each MoE layer's experts
    optimizer = AdamW(
        parameter_groups(model, o.weight_decay), lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
    )
    train_module: torch.nn.Module = model
    if t.activation_checkpointing:
        _checkpoint_layers(model)
    if t.compile:
        train_module = torch.compile(train_module)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [device.index] if device.type == "cuda" else None
        train_module = DistributedDataParallel(train_module, device_ids=device_ids)
    settings = LoopSettings(
        max_steps=t.max_steps,
        batch_size=t.batch_size,
        grad_accum_steps=t.grad_accum_steps,
        grad_clip=o.grad_clip,
        eval_every=t.eval_every,
        eval_batches=t.eval_batches,
        checkpoint_every=t.checkpoint_every,
        keep_checkpoints=t.keep_checkpoints,
        early_stopping_patience=t.early_stopping_patience,
        target_accuracy=t.target_accuracy,
        log_every=config.logging.log_every,
        seed=t.seed,
        precision=t.precision,
        eval_at_start=True,  # the loss at initialisation (about ln V) is the first point of every curve
    )
    trainer = Trainer(
        model,
        optimizer,
        learning_rate_schedule(config),
        data.batches,
        settings,
        device,
        checkpoint_dir=run_dir / "checkpoints",
        train_module=train_module,
        extra_state={"config": json.dumps(resolved.to_dict()), "name": name, "data_identity": identity},
        is_writer=writer,
    )
    trainer.stop_requested = lambda: agreed_stop(signals.requested(), world, device)
    changes: list[dict[str, Any]] = []
    if checkpoint is not None:

        def check(extra: dict[str, Any]) -> None:
            changes.extend(extra.get("config_changes", []))
            applied = resume_checks.check_resume(resolved, run_dir, extra, identity, allow_changes)
            steps = resume_checks.max_steps_change(
                extra, resolved, payload["iteration"], learning_rate_schedule, quiet=not writer
            )
            changes.extend({"step": payload["iteration"], **c} for c in applied + ([steps] if steps else []))

        trainer.resume(checkpoint, check_extra=check, payload=payload)
        trainer.extra_state["config_changes"] = changes
    tokenizer_info = None
    if writer:
        atomic_write_text(run_dir / "config.json", json.dumps(resolved.to_dict(), indent=2) + "\n")
        atomic_write_text(run_dir / "environment.json", json.dumps(environment_info(), indent=2) + "\n")
        tokenizer_info = save_run_tokenizer(data.tokenizer, run_dir) if data.tokenizer is not None else None
        rewind_metrics(run_dir / "metrics.jsonl", trainer.state.step)
        if changes:
            record_config_changes(run_dir, changes)
        elif checkpoint is not None:  # a file left by a resume whose first checkpoint never came is not true
            (run_dir / CONFIG_CHANGES).unlink(missing_ok=True)
    tracker = Tracker(
        run_dir,
        name,
        config.to_dict(),
        t.max_steps,
        config.logging.wandb,
        config.logging.wandb_project,
        config.logging.progress_bar,
        start_step=trainer.state.step,
        enabled=writer,
        flops_per_token=training_flops_per_token(model, config.model.context_length, counts),
        device=device,
    )
    tracker.write(
        f"run {name}: {config.model.architecture}, {counts['total']:,} parameters "
        f"({counts['non_embedding']:,} non-embedding, {counts['active']:,} active per token), device {device}, "
        f"{world} process(es)" + (f", resumed at step {trainer.state.step}" if checkpoint is not None else "")
    )
    trainer.log = tracker.log
    started = time.perf_counter()
    try:
        with RssSampler() as rss, signals.deferred():
            trainer.fit()
    except (NonFiniteError, TrainingInterrupted):
        tracker.close()
        raise
    summary = None
    if writer:
        session = {"device": device, "rss": rss, "wall_clock_s": time.perf_counter() - started}
        summary = finish_run(resolved, name, run_dir, trainer, data, counts, tracker, session, tokenizer_info)
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    tracker.close(summary)
    if dist.is_initialized():
        dist.barrier()
    return summary
