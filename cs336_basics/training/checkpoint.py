"""Checkpoints: model + optimizer + iteration + the runner's extras, saved atomically and loaded defensively.

- **Format.** One ``torch.save`` dict ``{"format", "version", "iteration", "model", "optimizer", "extra"}`` holding
  only tensors and plain Python values, so it loads with ``torch.load(..., weights_only=True)`` (no arbitrary
  unpickling). ``extra`` carries what the runner needs to resume the exact trajectory: schedule position, tokens
  seen, data position, RNG states (as tensors), the config dict.
- **Atomic for paths.** The file is written to a temporary file in the same directory, flushed and fsynced, then
  ``os.replace``d over the target: a crash mid-write leaves the previous checkpoint intact, never a torn file.
- **Validate, then mutate.** Loading reads and checks everything first (readable, the expected keys, model keys and
  shapes, optimizer group sizes); only then are the model and optimizer touched. A truncated or foreign file raises a
  one-line ``ValueError`` and leaves the in-memory state as it was.
- **Wrapper-agnostic.** ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers are unwrapped, so the keys in a
  checkpoint never depend on how the model was run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, BinaryIO

import torch

from cs336_basics.atomic_files import atomic_write

FORMAT = "cs336-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("model", "optimizer", "iteration")
PARAMETER_SHAPED_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")
PLAIN_TYPES = (int, float, str, bool, bytes, type(None), torch.Tensor)

Source = str | os.PathLike | BinaryIO | IO[bytes]


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module underneath ``torch.compile`` / DDP wrappers (the model itself when unwrapped)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _describe(src: Source) -> str:
    if isinstance(src, str | os.PathLike):
        return os.fspath(src)
    return str(getattr(src, "name", f"<{type(src).__name__}>"))


def _check_plain(value: Any, where: str) -> None:
    """Reject values ``torch.load(weights_only=True)`` could not read back (numpy arrays, custom objects...)."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise ValueError(f"checkpoint extra {where} has a key of type {type(key).__name__}; use str keys")
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif not isinstance(value, PLAIN_TYPES):
        raise ValueError(
            f"checkpoint extra {where} is a {type(value).__name__}; store tensors or plain Python values "
            "(convert numpy arrays with torch.from_numpy)"
        )


def save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    out: Source,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write model, optimizer (may be ``None``), ``iteration`` and ``extra`` to ``out`` (a path or binary file)."""
    if extra is not None:
        if not isinstance(extra, dict):
            raise ValueError(f"extra must be a dict of tensors / plain values, got {type(extra).__name__}")
        _check_plain(extra, "extra")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "iteration": int(iteration),
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "extra": extra or {},
    }
    if not isinstance(out, str | os.PathLike):
        torch.save(payload, out)
        return
    path = Path(out)
    atomic_write(path, lambda handle: torch.save(payload, handle))
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def read_checkpoint(src: Source) -> dict[str, Any]:
    """Load and structurally check a checkpoint without applying it; raises a one-line error if it is unusable."""
    name = _describe(src)
    if isinstance(src, str | os.PathLike) and not Path(src).is_file():
        raise FileNotFoundError(f"checkpoint {name} does not exist; check the run directory / --resume path")
    try:
        payload = torch.load(src, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError/UnpicklingError/EOFError/... depending on the damage
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error):  # torch's text would advise weights_only=False, i.e. running the file's code
            reason = f"{type(error).__name__}: it holds something other than tensors and plain values"
        raise ValueError(f"checkpoint {name} is truncated or not a checkpoint ({reason[:200]})") from None
    if not isinstance(payload, dict) or any(key not in payload for key in REQUIRED_KEYS):
        found = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"checkpoint {name} is not a checkpoint written by save_checkpoint (found {found})")
    if not isinstance(payload["model"], Mapping) or not isinstance(payload["iteration"], int):
        raise ValueError(f"checkpoint {name} is malformed: 'model' must be a state dict and 'iteration' an int")
    payload.setdefault("extra", {})
    return payload


def _check_model_compatible(name: str, saved: Mapping[str, Any], model: torch.nn.Module) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {name} does not match the model: missing keys {missing[:5]}, unexpected keys "
            f"{unexpected[:5]}; build the model with the config the checkpoint was trained with"
        )
    for key, tensor in expected.items():
        value = saved[key]
        if not isinstance(value, torch.Tensor) or value.shape != tensor.shape:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"checkpoint {name} does not match the model: {key} has shape {shape} in the file but "
                f"{tuple(tensor.shape)} in the model"
            )


def _check_optimizer_compatible(name: str, saved: Any, optimizer: torch.optim.Optimizer) -> None:
    if not isinstance(saved, Mapping) or "param_groups" not in saved or "state" not in saved:
        raise ValueError(f"checkpoint {name} holds no optimizer state; load it with optimizer=None")
    saved_sizes = [len(group["params"]) for group in saved["param_groups"]]
    current_sizes = [len(group["params"]) for group in optimizer.param_groups]
    if saved_sizes != current_sizes:
        raise ValueError(
            f"checkpoint {name} does not match the optimizer: parameter group sizes {saved_sizes} in the file vs "
            f"{current_sizes} now; build the optimizer's parameter groups the same way as when saving"
        )
    # Per-parameter moment buffers must have their parameter's shape; a different parameter order within the groups
    # would otherwise load silently and fail (or worse, broadcast) at the next step.
    saved_ids = [index for group in saved["param_groups"] for index in group["params"]]
    current = [param for group in optimizer.param_groups for param in group["params"]]
    for index, param in zip(saved_ids, current, strict=True):
        for key, value in saved["state"].get(index, {}).items():
            if key in PARAMETER_SHAPED_STATE and isinstance(value, torch.Tensor) and value.shape != param.shape:
                raise ValueError(
                    f"checkpoint {name} does not match the optimizer: state {key!r} of parameter {index} has shape "
                    f"{tuple(value.shape)} but the parameter is {tuple(param.shape)}; keep the parameter order"
                )


def load_checkpoint(src: Source, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Restore ``model`` and ``optimizer`` (unless ``None``) from ``src``; returns the saved iteration."""
    return restore_checkpoint(read_checkpoint(src), model, optimizer, name=_describe(src))


def restore_checkpoint(
    payload: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, name: str = "payload"
) -> int:
    """Apply a payload from :func:`read_checkpoint` (validated first, then loaded); returns its iteration."""
    target = unwrap_model(model)
    _check_model_compatible(name, payload["model"], target)
    if optimizer is not None:
        _check_optimizer_compatible(name, payload["optimizer"], optimizer)
    target.load_state_dict(payload["model"])
    if optimizer is not None:
        optimizer.load_state_dict(payload["optimizer"])
    return payload["iteration"]


def load_checkpoint_extra(src: Source) -> dict[str, Any]:
    """The ``extra`` dict stored with :func:`save_checkpoint` (empty if none was given)."""
    return read_checkpoint(src)["extra"]
