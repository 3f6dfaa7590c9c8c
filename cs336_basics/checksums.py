"""SHA-256 checksums, the one place the project computes them: of a file (read in blocks, so any size works in
constant memory) and of in-memory text or bytes. Hex digests throughout, as recorded in every ``meta.json``."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike, block_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of the file's bytes, read ``block_bytes`` at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(block_bytes):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(data: str | bytes) -> str:
    """Hex SHA-256 of ``data`` (text is hashed as UTF-8)."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()
