"""Byte-level BPE training that scales to multi-GB corpora.

Semantics (``docs/ADAPTERS.md``): the vocabulary starts with the 256 single bytes (ids 0..255), then the
special tokens (ids 256..), then one token per merge; ``vocab_size`` counts all of them. Special tokens are hard
boundaries and never take part in merges. Each step merges the most frequent adjacent pair within pre-tokens; ties
go to the lexicographically greatest ``(left_bytes, right_bytes)``.

How it scales:

1. The file is cut into ~``chunk_bytes`` chunks at special tokens (or safe whitespace positions); worker processes
   pre-tokenize the chunks and return only ``Counter``\\s of distinct pre-tokens (see :mod:`.pretokenize`).
2. The merge loop keeps pair counts, a pair -> word-index set and a max-heap with lazy invalidation. Only pairs
   touching the new token ever gain count, so after each merge only those are pushed; an entry popped with a stale
   (higher) count is re-pushed with its current count. Word lists are rewritten only where the merged pair occurs.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import os
import warnings
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

from tqdm import tqdm

from cs336_basics.tokenizer.pretokenize import (
    count_pretokens_in_text,
    find_chunk_boundaries,
    read_chunk_text,
    special_split_pattern,
)

DEFAULT_CHUNK_BYTES = 4 << 20  # small enough to keep each worker's working set to a few tens of MB


class VocabShortfallWarning(UserWarning):
    """BPE ran out of pairs to merge before reaching the requested vocabulary size."""


def shortfall_message(reached: int, requested: int) -> str:
    return (
        f"BPE training reached a vocabulary of {reached} tokens, not the requested {requested}: the corpus has no "
        "pair left to merge; use more (or more varied) text, or a vocab size of at most " + str(reached)
    )


def _count_chunk(args: tuple[str, int, int, list[str]]) -> Counter[str]:
    path, start, end, special_tokens = args
    return count_pretokens_in_text(read_chunk_text(path, start, end), special_split_pattern(special_tokens))


def count_pretokens(
    input_path: str | os.PathLike,
    special_tokens: list[str],
    num_workers: int | None = None,
    progress: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Counter[str]:
    """Distinct pre-tokens of a UTF-8 file and their counts, computed over chunks in ``num_workers`` processes."""
    path = str(input_path)
    bounds = find_chunk_boundaries(path, chunk_bytes, special_tokens)
    tasks = [(path, s, e, special_tokens) for s, e in pairwise(bounds)]
    workers = min(num_workers or os.cpu_count() or 1, len(tasks))
    total: Counter[str] = Counter()
    bar = tqdm(total=bounds[-1], unit="B", unit_scale=True, desc="pre-tokenize", disable=not progress)
    if workers <= 1:
        results = map(_count_chunk, tasks)
        for task, counts in zip(tasks, results, strict=True):
            total.update(counts)
            bar.update(task[2] - task[1])
    else:
        with mp.get_context("fork").Pool(workers) as pool:
            for task, counts in zip(tasks, pool.imap(_count_chunk, tasks), strict=True):
                total.update(counts)
                bar.update(task[2] - task[1])
    bar.close()
    return total


def _order_key(token: bytes) -> bytes:
    """A bytes key whose ascending order is the *descending* lexicographic order of ``token`` (prefixes last)."""
    return bytes(x for c in token for x in (0, 255 - c)) + b"\x01\x00"


def merge_pretokens(
    pretoken_counts: dict[bytes, int],
    vocab: dict[int, bytes],
    num_merges: int,
    progress: bool = False,
) -> list[tuple[bytes, bytes]]:
    """Run up to ``num_merges`` BPE merges over weighted pre-tokens, adding new tokens to ``vocab`` in place."""
    words: list[list[int]] = [list(tok) for tok in pretoken_counts]  # byte b has id b
    word_counts = list(pretoken_counts.values())
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    pair_words: dict[tuple[int, int], set[int]] = defaultdict(set)
    for wi, (word, c) in enumerate(zip(words, word_counts, strict=True)):
        for pair in pairwise(word):
            pair_counts[pair] += c
            pair_words[pair].add(wi)
    keys = {i: _order_key(tok) for i, tok in vocab.items()}
    heap = [(-c, keys[a], keys[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[bytes, bytes]] = []
    next_id = max(vocab) + 1
    for _ in tqdm(range(num_merges), desc="merge", disable=not progress):
        while heap:
            neg, ka, kb, a, b = heap[0]
            current = pair_counts.get((a, b), 0)
            if current == -neg:
                break
            heapq.heappop(heap)  # stale: the pair lost count since it was pushed
            if current > 0:
                heapq.heappush(heap, (-current, ka, kb, a, b))
        if not heap:
            break
        _, _, _, a, b = heapq.heappop(heap)
        z = next_id
        next_id += 1
        vocab[z] = vocab[a] + vocab[b]
        keys[z] = _order_key(vocab[z])
        merges.append((vocab[a], vocab[b]))

        touched: set[tuple[int, int]] = set()
        for wi in pair_words.pop((a, b)):
            word = words[wi]
            new: list[int] = []
            i, n = 0, len(word)
            while i < n:
                if i + 1 < n and word[i] == a and word[i + 1] == b:
                    new.append(z)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            if len(new) == n:
                continue
            c = word_counts[wi]
            for pair in pairwise(word):
                pair_counts[pair] -= c
            for pair in pairwise(new):
                pair_counts[pair] += c
                if pair[0] == z or pair[1] == z:
                    pair_words[pair].add(wi)
                    touched.add(pair)
            words[wi] = new
        del pair_counts[(a, b)]
        for pair in touched:
            heapq.heappush(heap, (-pair_counts[pair], keys[pair[0]], keys[pair[1]], pair[0], pair[1]))
    return merges


def train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: list[str] | None,
    num_workers: int | None = None,
    progress: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE tokenizer on a UTF-8 text file.

    Args:
        input_path: the training corpus (UTF-8).
        vocab_size: final vocabulary size, counting the 256 bytes and the special tokens.
        special_tokens: strings that split the text and are added to the vocabulary, never merged.
        num_workers: pre-tokenization processes (default: all cores).
        progress: show tqdm progress bars.
        chunk_bytes: target size of the chunks handed to workers.

    Returns:
        ``(vocab, merges)``: id -> token bytes, and the merges in creation order.
    """
    path = Path(input_path)
    if not path.is_file():
        raise FileNotFoundError(f"BPE training input {path} does not exist; pass a path to a UTF-8 text file")
    if path.stat().st_size == 0:
        raise ValueError(f"BPE training input {path} is empty; pass a non-empty UTF-8 text file")
    specials = list(dict.fromkeys(special_tokens or []))
    if any(not s for s in specials):
        raise ValueError("special_tokens contains an empty string; remove it")
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than 256 bytes + {len(specials)} special tokens; "
            f"use at least {256 + len(specials)}"
        )
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes={chunk_bytes} must be positive")

    counts = count_pretokens(path, specials, num_workers, progress, chunk_bytes)
    vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
    for s in specials:
        vocab[len(vocab)] = s.encode("utf-8")
    pretoken_counts = {tok.encode("utf-8"): c for tok, c in counts.items()}
    merges = merge_pretokens(pretoken_counts, vocab, vocab_size - len(vocab), progress)
    if len(vocab) < vocab_size:
        warnings.warn(shortfall_message(len(vocab), vocab_size), VocabShortfallWarning, stacklevel=2)
    return vocab, merges
