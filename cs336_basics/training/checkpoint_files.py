"""A run's checkpoint directory: naming, finding the latest complete checkpoint, pruning, and weight averaging.

Checkpoints are named ``step_<7 digits>.pt``; :func:`save_checkpoint` writes them through a temporary file and a
rename, so any file with that exact name is complete and the lexicographic order is the step order. Averaging the
last k checkpoints' weights (Polyak/"checkpoint averaging") is an alternative to a learning-rate cooldown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cs336_basics.optim.averaging import average_state_dicts
from cs336_basics.training.checkpoint import read_checkpoint

CHECKPOINT_NAME = re.compile(r"^step_\d{7}\.pt$")


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints in ``directory``, oldest first (temporary files are ignored)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if CHECKPOINT_NAME.match(p.name))


def prune_checkpoints(directory: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints."""
    for path in list_checkpoints(directory)[:-keep]:
        path.unlink(missing_ok=True)


def average_last_checkpoints(directory: Path, k: int) -> tuple[dict[str, Any], list[int]]:
    """The element-wise mean of the model weights in the newest ``k`` checkpoints, and their steps."""
    paths = list_checkpoints(directory)[-k:]
    if not paths:
        raise FileNotFoundError(f"no checkpoints in {directory} to average; set train.checkpoint_every > 0")
    payloads = [read_checkpoint(path) for path in paths]
    return average_state_dicts([p["model"] for p in payloads]), [p["iteration"] for p in payloads]
