"""All-or-nothing file writes: a temporary file beside the target, flushed to disk, then renamed over it.

A reader (or a run killed mid-write) sees either the old file or the complete new one, never a torn one. The
temporary file is ``.<name>.<random>.tmp`` in the target's folder, which is the name the runner's start-up clean-up
looks for after a kill.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Let ``write`` fill a temporary binary file beside ``path``, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text is written as UTF-8)."""
    atomic_write(path, lambda handle: handle.write(data.encode("utf-8") if isinstance(data, str) else data))
