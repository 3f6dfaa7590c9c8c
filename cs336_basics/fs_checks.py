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


def os_error_line(error: OSError) -> tuple[int, str]:
    """Exit code and one line for an OS error met while writing: 1 for a full disk, 2 for an unwritable place
    (a user error), 1 for anything else (a bug or a system problem, still one line rather than a traceback)."""
    where = f" writing {error.filename}" if error.filename else ""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return 1, (
            f"error: no space left on the device{where}; free some space (or write elsewhere) and rerun: complete "
            "files already written are intact"
        )
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOTDIR):
        return 2, f"error: cannot write{where or ' a file'} ({error.strerror}); use a writable directory"
    return 1, f"error: {error.strerror or type(error).__name__}{where}"
