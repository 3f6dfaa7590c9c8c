"""What ``--resume`` checks before it continues a run: a loadable checkpoint, the same config, the same data.

- :func:`newest_loadable_checkpoint`: the newest checkpoint that reads back. One that does not (truncated, empty,
  random bytes) is renamed to ``<name>.unreadable`` (kept, never deleted, and no longer counted as a checkpoint) and
  the next older one is tried, with a one-line notice naming the file.
- :func:`data_identity`: what the run trained on: the tokenizer's checksum and the token arrays' checksums (for a
  corpus they follow from the source files and the tokenizer; for ``data.source=tokens`` the files themselves).
  Recorded in every checkpoint; :func:`identity_changes` names what differs on resume.
- :func:`check_resume`: refuse a checkpoint trained with another config (except ``train.max_steps``, ``logging.*``
  and the ``optim.*`` keys named with ``--allow-change``) or on other data, with one line naming the keys.
- ``--allow-change optim.lr=1e-4``: a named optimizer setting may change on resume; the change is recorded in the
  checkpoints (``extra["config_changes"]``) and in ``config_changes.json`` in the run directory.
- :func:`max_steps_change`: a changed ``train.max_steps`` is recorded the same way, with a notice when it moves the
  learning rate (a cosine or WSD schedule is laid out over max_steps).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assignment_experiments.config import ConfigError, ExperimentConfig, resume_conflicts
from assignment_experiments.resolved_config import resolve_saved_config
from cs336_basics.training.checkpoint import read_checkpoint
from cs336_basics.training.checkpoint_files import list_checkpoints

ALLOWED_CHANGE_PREFIX = "optim."
UNREADABLE_SUFFIX = ".unreadable"


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def newest_loadable_checkpoint(
    directory: Path, notice: Callable[[str], None] = _stderr, move_aside: bool = True
) -> tuple[Path | None, dict[str, Any] | None]:
    """``(path, payload)`` of the newest checkpoint in ``directory`` that loads; ``(None, None)`` if none exists.

    ``move_aside=False`` (data-parallel ranks other than 0) only skips unreadable files; rank 0 renames them.
    """
    candidates = list_checkpoints(directory)
    for index in range(len(candidates) - 1, -1, -1):
        path = candidates[index]
        try:
            return path, read_checkpoint(path)
        except (ValueError, OSError) as error:
            aside = path.with_name(path.name + UNREADABLE_SUFFIX)
            if move_aside:
                os.replace(path, aside)
            then = f"continuing from {candidates[index - 1].name}" if index else "no older checkpoint is left"
            if move_aside:
                notice(f"warning: {str(error).splitlines()[0]}; moved it to {aside.name}, {then}")
    if candidates:
        raise ConfigError(
            f"config error: none of the {len(candidates)} checkpoints in {directory} loads (renamed to "
            f"*{UNREADABLE_SUFFIX}); start a new run with another --name"
        )
    return None, None


def split_allowed_changes(items: list[str]) -> tuple[list[str], list[str]]:
    """``--allow-change KEY=VALUE`` items -> (``--set`` overrides, keys); only ``optim.*`` keys may be named."""
    keys = []
    for item in items:
        key = item.partition("=")[0].strip()
        if "=" not in item or not key.startswith(ALLOWED_CHANGE_PREFIX):
            raise ConfigError(
                f"config error: --allow-change {item!r}: give optim.KEY=VALUE (only optimizer settings may change "
                "on --resume; anything else needs a new --name)"
            )
        keys.append(key)
    return list(items), keys


def data_identity(config: ExperimentConfig, meta: dict[str, Any]) -> dict[str, str]:
    """Checksums that identify the data a run trains on (empty for synthetic tasks, which the config defines)."""
    data = config.data
    if data.source == "synthetic":
        return {}
    if data.source == "tokens":
        from cs336_basics.data.cache import fingerprint, sha256_file

        identity = {}
        for label, value in (("train tokens", data.path), ("val tokens", data.val_path)):
            if value is not None:
                memo = Path(data.cache_dir)
                try:  # memoised by size and mtime where a cache folder already exists (multi-GB files)
                    digest = fingerprint(value, memo) if memo.is_dir() else sha256_file(value)
                except OSError:  # the memo is not writable: hash directly
                    digest = sha256_file(value)
                identity[f"{label} sha256"] = digest
        return identity
    files = meta.get("files", {})
    identity = {"tokenizer sha256": meta.get("tokenizer_sha256")}
    for side in ("train", "val"):
        info = files.get(f"{side}/tokens.bin")
        if info:
            identity[f"{side} tokens sha256"] = info["sha256"]
    return {k: v for k, v in identity.items() if v is not None}


def identity_changes(saved: dict[str, str], current: dict[str, str]) -> list[str]:
    return [
        f"{key} {str(saved[key])[:12]}... -> {str(current.get(key))[:12]}..."
        for key in sorted(saved)
        if key in current and saved[key] != current[key]
    ]


def check_resume(
    config: ExperimentConfig,
    run_dir: Path,
    extra: dict[str, Any],
    identity: dict[str, str],
    allowed: list[str],
) -> list[dict[str, Any]]:
    """Raise ConfigError if the checkpoint's config or data differ; returns the allowed changes that apply."""
    saved = resolve_saved_config(extra["config"], config.model.vocab_size) if "config" in extra else None
    changed = resume_conflicts(saved, config) if saved is not None else []
    blocked = [c for c in changed if c.split(":")[0] not in allowed]
    if blocked:
        optim = [c.split(":")[0] for c in blocked if c.startswith(ALLOWED_CHANGE_PREFIX)]
        hint = f", or allow the optimizer change with --allow-change {optim[0]}=VALUE" if optim else ""
        raise ConfigError(
            f"config error: {run_dir} was trained with a different config ({'; '.join(blocked)}); only "
            f"train.max_steps, train.num_threads and logging.* may change on --resume: use its config.json or a new "
            f"--name{hint}"
        )
    differences = identity_changes(extra.get("data_identity", {}), identity)
    if differences:
        raise ConfigError(
            f"config error: {run_dir} was trained on other data ({'; '.join(differences)}); resume with the data and "
            "tokenizer it was trained on, or start a new --name"
        )
    applied = []
    for entry in changed:  # "optim.lr: 0.01 -> 0.001"
        key, _, change = entry.partition(": ")
        applied.append({"key": key, "change": change})
    return applied


def max_steps_change(
    extra: dict[str, Any],
    config: ExperimentConfig,
    step: int,
    schedule_for: Callable[[ExperimentConfig], Callable[[int], float]],
    notice: Callable[[str], None] = _stderr,
) -> dict[str, Any] | None:
    """The record of a ``train.max_steps`` change on resume (``None`` when it is unchanged).

    ``--resume --set train.max_steps=N`` extends or shortens a run, and a cosine or WSD schedule is laid out over
    max_steps, so the learning rate from ``step`` on is not the one the run was following: say so, with both values,
    and record the change (in ``config_changes.json`` and the log entry) so the run's settings stay true."""
    saved = resolve_saved_config(extra["config"], config.model.vocab_size) if "config" in extra else None
    before = saved["train"]["max_steps"] if saved is not None else None
    after = config.train.max_steps
    if before is None or before == after:
        return None
    was = dataclasses.replace(config, train=dataclasses.replace(config.train, max_steps=before))
    lr_before, lr_after = schedule_for(was)(step), schedule_for(config)(step)
    if lr_before != lr_after:
        notice(
            f"notice: train.max_steps {before} -> {after} on resume: the {config.optim.schedule} schedule is laid out "
            f"over max_steps, so the learning rate at step {step} is {lr_after:.3g} where the run's schedule gave "
            f"{lr_before:.3g}; recorded in config_changes.json (for the schedule of an uninterrupted {after}-step "
            "run, start a new --name)"
        )
    return {"key": "train.max_steps", "change": f"{before} -> {after}", "lr_before": lr_before, "lr_after": lr_after}


def record_changes(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write the run's resume changes so far (``--allow-change``, ``train.max_steps``) to ``config_changes.json``."""
    from assignment_experiments.run_files import atomic_write_text

    atomic_write_text(run_dir / "config_changes.json", json.dumps(history, indent=2) + "\n")
