"""Content-addressed cache entries for prepared data: a folder named by a key, files inside, and a ``meta.json``
that records every file's size and SHA-256.

- :func:`cache_key` hashes everything an entry depends on (source, its checksums, tokenizer checksum, split
  settings, format version), so a changed input or tokenizer gets a new folder and is never silently reused.
- :func:`verify_entry` re-checks sizes (cheap) and, by default, checksums; a truncated or corrupted file makes the
  entry invalid and the caller rebuilds it. ``meta.json`` is written last and atomically: a build interrupted
  half-way has no ``meta.json`` and counts as missing.
- :func:`build_entry` builds in a private temporary folder and publishes it with a rename, so processes preparing
  the same corpus at once (e.g. DDP ranks) never see or write each other's half-built files. The builder holds an
  ``flock`` on ``.owner`` inside that folder; :func:`remove_stale_builds` deletes the folders whose owner is gone
  (killed mid-build) and leaves live builds alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cs336_basics.checksums import sha256_file, sha256_text

FORMAT_VERSION = 1


def fingerprint(path: str | os.PathLike, memo_dir: str | os.PathLike) -> str:
    """SHA-256 of an input file, memoised in ``memo_dir/fingerprints.json`` by (path, size, mtime) so a second run
    over a multi-GB corpus does not re-read it; any change to the file's size or modification time re-hashes it."""
    path, memo_path = Path(path).resolve(), Path(memo_dir) / "fingerprints.json"
    stat = path.stat()
    stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        memo = {}
    entry = memo.get(str(path))
    if entry is not None and entry["stamp"] == stamp:
        return entry["sha256"]
    digest = sha256_file(path)
    memo[str(path)] = {"stamp": stamp, "sha256": digest}
    memo_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo_path.with_name(f"fingerprints.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(memo, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, memo_path)
    return digest


def cache_key(parts: dict[str, Any]) -> str:
    """A short stable hash of ``parts`` (JSON-serialisable) plus the cache format version."""
    text = json.dumps({"format": FORMAT_VERSION, **parts}, sort_keys=True, default=str)
    return sha256_text(text)[:16]


def describe_files(directory: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"bytes", "sha256"}}`` for files inside ``directory``."""
    return {n: {"bytes": (directory / n).stat().st_size, "sha256": sha256_file(directory / n)} for n in names}


def write_meta(directory: Path, meta: dict[str, Any]) -> None:
    tmp = directory / "meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, directory / "meta.json")


def read_meta(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / "meta.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def verify_entry(directory: Path, checksums: bool = True) -> tuple[dict[str, Any] | None, str]:
    """``(meta, "")`` when every recorded file exists with its recorded size (and SHA-256); else ``(None, reason)``."""
    meta = read_meta(directory)
    if meta is None:
        return None, f"{directory / 'meta.json'} is missing or unreadable"
    for name, info in meta.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            return None, f"{path} is missing"
        if path.stat().st_size != info["bytes"]:
            return None, f"{path} has {path.stat().st_size} bytes, expected {info['bytes']}"
        if checksums and sha256_file(path) != info["sha256"]:
            return None, f"{path} does not match its recorded SHA-256"
    return meta, ""


OWNER = ".owner"
STALE_WITHOUT_OWNER_S = 3600  # a build folder with no owner file (older layout) counts as abandoned after an hour


def _claim(folder: Path) -> int:
    """Lock a new owner file, then rename it into place, so an ``.owner`` is never seen unlocked."""
    fd, name = tempfile.mkstemp(prefix=".owner-", dir=folder)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.rename(name, folder / OWNER)
    return fd


def remove_stale_builds(cache_dir: str | os.PathLike) -> list[Path]:
    """Delete build folders (``*.building-*``, ``*.old-*``) left by processes that died; returns them."""
    import time

    cache_dir, removed = Path(cache_dir), []
    if not cache_dir.is_dir():
        return removed
    for folder in cache_dir.iterdir():
        if not folder.is_dir() or (".building-" not in folder.name and ".old-" not in folder.name):
            continue
        if ".building-" in folder.name:
            try:
                fd = os.open(folder / OWNER, os.O_RDONLY)
            except FileNotFoundError:
                try:
                    if time.time() - folder.stat().st_mtime < STALE_WITHOUT_OWNER_S:
                        continue  # just created (owner not in place yet) or publishing: not ours to judge
                except FileNotFoundError:
                    continue
                fd = None
            except OSError:
                continue
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live build
                finally:
                    os.close(fd)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def build_entry(directory: Path) -> Iterator[Path]:
    """Yield a private folder to build ``directory`` in; on success, replace ``directory`` with it atomically.

    A valid entry that another process published while we were building is kept and ours is discarded (entries are
    deterministic, so both are identical): replacing it would pull files from under a process already reading them.
    Only a missing or damaged entry is replaced.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{directory.name}.building-", dir=directory.parent))
    owner = _claim(tmp)
    try:
        yield tmp
        (tmp / OWNER).unlink()  # the published entry carries no owner file (we keep the lock on the open fd)
        if verify_entry(directory, checksums=True)[0] is not None:
            return
        if directory.exists():
            trash = Path(tempfile.mkdtemp(prefix=f"{directory.name}.old-", dir=directory.parent))
            try:
                os.rename(directory, trash / "entry")
            except OSError:
                pass  # someone else moved it first
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, directory)
        except OSError:
            pass  # published by another process meanwhile
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.close(owner)
