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
  learning rate (a cosine or WSD schedule is laid out over max_steps) or leaves nothing to train.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from assignment_experiments.config import ConfigError, ExperimentConfig, resume_conflicts
from assignment_experiments.resolved_config import resolve_saved_config, saved_config
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
    quiet: bool = False,
) -> dict[str, Any] | None:
    """The record of a ``train.max_steps`` change on resume (``None`` when it is unchanged or nothing is left to
    train), with a one-line notice.

    ``--resume --set train.max_steps=N`` extends or shortens a run. A cosine or WSD schedule is laid out over
    max_steps, so the learning rate from the resume on is not the one the run was following: the notice gives both,
    and the record (``config_changes.json``, then the log entry) keeps the run's stated settings true, since
    ``config.json`` holds only the final max_steps."""
    if "config" not in extra:  # checkpoints from before configs were stored: nothing to compare with
        return None
    notice = (lambda _: None) if quiet else _stderr  # quiet: the ranks of a distributed run other than the writer
    saved = saved_config(extra["config"], config.model.vocab_size)
    before, after = saved.train.max_steps, config.train.max_steps
    if before == after:
        return None
    if step >= after or extra.get("loop", {}).get("stopped_early"):
        why = "stopped early (target accuracy or patience)" if step < after else f"already at step {step}"
        notice(f"notice: train.max_steps {before} -> {after} on resume: the run is {why}, so no step is trained")
        return None
    # The run's own schedule, from the checkpoint's config (validated when it trained), against the new one; the
    # step that metrics.jsonl logs as step + 1 is the first to run at the new rate.
    lr_before, lr_after = schedule_for(saved)(step), schedule_for(config)(step)
    if lr_before != lr_after:
        notice(
            f"notice: train.max_steps {before} -> {after} on resume: the {config.optim.schedule} schedule is laid out "
            f"over max_steps, so step {step + 1} trains at lr {lr_after:.3g} where the run's schedule gives "
            f"{lr_before:.3g}; recorded in config_changes.json (for the schedule of an uninterrupted {after}-step "
            "run, start a new --name)"
        )
    return {"key": "train.max_steps", "change": f"{before} -> {after}", "lr_before": lr_before, "lr_after": lr_after}
