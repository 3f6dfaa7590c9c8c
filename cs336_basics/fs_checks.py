"""Check that an output directory can be written *before* spending minutes on the work that fills it.

:func:`check_writable_dir` accepts a directory that exists and takes a new file, or a path that does not exist yet
whose nearest existing ancestor is a writable directory (it will be created later, by the writer). It probes by
creating and removing a temporary file, which also gives the right answer for root, read-only mounts and ACLs
(where ``os.access`` does not). Problems raise :class:`NotWritableError`, a ``ValueError`` with a one-line message.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


class NotWritableError(ValueError):
    """An output location that cannot be written; the message names it and what to do."""


def check_writable_dir(path: str | os.PathLike, what: str) -> None:
    """Raise :class:`NotWritableError` unless ``path`` is (or can be created as) a writable directory."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        detail = "is a file" if probe == path else f"has a file in its way ({probe})"
        raise NotWritableError(f"{what} {path} {detail}; pass a directory path")
    try:
        fd, name = tempfile.mkstemp(prefix=".write-check-", dir=probe)
    except OSError as error:
        reason = "read-only file system" if error.errno == errno.EROFS else (error.strerror or type(error).__name__)
        where = "" if probe == path else f" (its nearest existing parent {probe})"
        raise NotWritableError(f"{what} {path}{where} is not writable ({reason}); pass a writable directory") from None
    os.close(fd)
    os.unlink(name)
