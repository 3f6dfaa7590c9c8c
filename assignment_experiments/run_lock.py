"""One process per run directory: ``runs/<name>/.lock``.

The lock is an exclusive ``flock`` on ``.lock`` held for the whole run; the file's content names the holder (pid,
host, start time) so a second process can say who has the run. The kernel drops a ``flock`` when its process dies
(``kill -9`` included), so a lock file whose lock can be taken was left by a dead process: it is taken over with a
one-line notice. Releasing unlinks the file while still holding the lock; a process that locked the old file checks
afterwards that the path still names the file it locked, and retries otherwise.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

LOCK_NAME = ".lock"


class RunLocked(RuntimeError):
    """Another live process holds the run; the message names it."""


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"


class RunLock:
    """``with RunLock(run_dir): ...`` holds the run for this process (creating ``run_dir`` if needed)."""

    def __init__(self, run_dir: Path, notice=None) -> None:
        self.run_dir, self.path = Path(run_dir), Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self._created_dir = False
        self._notice = notice or (lambda line: print(line, file=sys.stderr, flush=True))

    def acquire(self) -> None:
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self._created_dir = True
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise RunLocked(
                    f"run {self.run_dir} is in use by another process ({_describe(holder)}); wait for it to finish, "
                    f"stop it, or use another --name"
                ) from None
            except OSError as error:
                if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                os.close(fd)  # a file system without locks (some network mounts): say so and run unlocked
                self._notice(f"note: {self.run_dir} cannot be locked here ({error.strerror}); running without a lock")
                return
            if self._same_file(fd):
                break
            os.close(fd)  # the holder released (unlinked) it between our open and flock: try the new file
        previous = self._read(fd)
        if previous:
            gone = _describe(previous)
            self._notice(f"note: taking over the lock of {self.run_dir} left by a process that is gone ({gone})")
        started = datetime.now(UTC).isoformat(timespec="seconds")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except (ValueError, OSError):
            return {}

    def release(self) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        if self._created_dir:
            try:
                self.run_dir.rmdir()  # only if nothing was written (the run failed before its first file)
            except OSError:
                pass

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
