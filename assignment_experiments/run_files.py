"""Small, careful writers (and the one reader of what they record) for the files of a run directory.

- :func:`atomic_write_text`: write to a temporary file in the same folder, fsync, then rename over the target, so a
  reader (``report``) or a crash never sees half a ``summary.json``.
- :func:`rewind_metrics`: on ``--resume``, cut ``metrics.jsonl`` back to the checkpoint's step. A line that is not
  valid JSON (a torn last line after ``kill -9``, or damage) is not silently dropped: it is appended to
  ``metrics.damaged.jsonl`` beside it, with its line number, and a one-line notice says so.
- :func:`record_config_changes` / :func:`read_config_changes`: the settings a ``--resume`` changed
  (``config_changes.json``), for the report and the plots, which would otherwise state ``config.json``'s final
  values for every step.
- :func:`read_json`: a run file's JSON, or a one-line error naming the file, for the scripts that read many runs.
- :func:`remove_temporary_checkpoints`: delete ``.step_*.tmp`` files left by a process killed mid-write (only call
  it while holding the run lock, so no live writer owns them).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cs336_basics.atomic_files import atomic_write_bytes

DAMAGED_SUFFIX = ".damaged.jsonl"


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (the old content stays until the new one is complete)."""
    atomic_write_bytes(path, text)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def rewind_metrics(path: Path, step: int, notice: Callable[[str], None] = _stderr) -> int:
    """Keep the records up to ``step`` (none when starting from step 0, whose evaluation the run logs again; no
    ``final`` record); set damaged lines aside. Returns how many were."""
    path = Path(path)
    if not path.is_file():
        return 0
    kept, damaged = [], []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError:
                damaged.append({"line": lineno, "text": line.rstrip("\n")})
                continue
            if 0 < step and record.get("step", 0) <= step and record.get("kind") != "final":  # step 0: fresh start
                kept.append(record)
    if damaged:
        aside = path.with_name(path.stem + DAMAGED_SUFFIX)
        with aside.open("a", encoding="utf-8") as handle:
            handle.writelines(json.dumps(d) + "\n" for d in damaged)
            handle.flush()
            os.fsync(handle.fileno())
        lines = ", ".join(str(d["line"]) for d in damaged[:5]) + (" ..." if len(damaged) > 5 else "")
        notice(f"note: {path} had {len(damaged)} damaged line(s) (line {lines}); kept aside in {aside}")
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return len(damaged)


CONFIG_CHANGES = "config_changes.json"


class UnreadableRecordError(ValueError):
    """A run's ``config_changes.json`` exists but is not a record of changes (damaged or edited by hand)."""


def record_config_changes(run_dir: Path, history: list[dict]) -> None:
    """Write the run's resume changes so far (``--allow-change``, ``train.max_steps``) to ``config_changes.json``."""
    atomic_write_text(Path(run_dir) / CONFIG_CHANGES, json.dumps(history, indent=2) + "\n")


def read_config_changes(run_dir: Path) -> list[dict]:
    """The changes ``--resume`` recorded in ``run_dir`` (``[]`` when there is no record), each with at least
    ``key`` (``"optim.lr"``), ``change`` (``"before -> after"``) and ``step``. Raises UnreadableRecordError when the
    file cannot be read as such a record."""
    path = Path(run_dir) / CONFIG_CHANGES
    if not path.exists():
        return []
    try:
        changes = json.loads(path.read_text())
        if not isinstance(changes, list) or not all(
            isinstance(c, dict)
            and isinstance(c.get("key"), str)
            and isinstance(c.get("change"), str)
            and isinstance(c.get("step"), int)
            for c in changes
        ):
            raise ValueError("not a list of changes, each with a key, a change and an integer step")
    except (OSError, ValueError) as error:
        raise UnreadableRecordError(f"{path} is unreadable ({error})") from error
    return changes


def read_json(path: Path) -> Any:
    """The JSON in ``path`` (a run's ``summary.json`` or ``config.json``); ValueError with a one-line message naming
    the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        problem = f"{path} is not valid JSON ({error.msg}, line {error.lineno})"
        raise ValueError(f"{problem}; fix it or leave the run out") from None


def remove_temporary_checkpoints(directory: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that never finished; returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    removed = [p for p in directory.glob(".step_*.tmp") if p.is_file()]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed
