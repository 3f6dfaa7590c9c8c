"""Streaming and writing for the seeded text generators (:mod:`.stories`, :mod:`.zipf_text`).

Both generators produce a corpus as a sequence of independent blocks of whole documents (block ``k`` depends only on
the seed and ``k``), so any prefix can be streamed in bounded memory and a smaller request is a prefix of a larger
one. These two helpers hold that contract in one place.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

# (seed, block index) -> (UTF-8 bytes of the block's documents, byte length of each document)
BlockFn = Callable[[int, int], tuple[bytes, np.ndarray]]


def iter_document_blocks(make_block: BlockFn, num_bytes: int, seed: int) -> Iterator[bytes]:
    """Blocks of whole documents totalling at least ``num_bytes``; the last is cut after the document reaching it."""
    if num_bytes < 0:
        raise ValueError(f"num_bytes must be >= 0, got {num_bytes}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    produced, block = 0, 0
    while produced < num_bytes:
        data, doc_bytes = make_block(seed, block)
        ends = np.cumsum(doc_bytes)
        if produced + ends[-1] >= num_bytes:
            cut = int(ends[np.searchsorted(ends, num_bytes - produced)])
            yield data[:cut]
            return
        produced += int(ends[-1])
        block += 1
        yield data


def write_chunks_atomically(path: str | os.PathLike, chunks: Iterable[bytes]) -> Path:
    """Stream ``chunks`` to ``path`` through a temporary file renamed at the end, so a crash leaves no partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
    os.replace(tmp, path)
    return path
