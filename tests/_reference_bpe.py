"""A slow, obviously-correct byte-level BPE trainer: the oracle for ``train_bpe`` (tests only).

Every step recounts all adjacent pairs from scratch and picks ``max`` by ``(count, (left, right))``, then rewrites
every word. Quadratic and slow; only for small corpora.
"""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import regex

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def reference_train_bpe(
    text: str, vocab_size: int, special_tokens: list[str]
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    segments = [text]
    for special in sorted(special_tokens, key=len, reverse=True):
        segments = [piece for segment in segments for piece in segment.split(special)]
    words: Counter[tuple[bytes, ...]] = Counter()
    for segment in segments:
        for pretoken in regex.findall(GPT2_PATTERN, segment):
            words[tuple(bytes([b]) for b in pretoken.encode("utf-8"))] += 1

    vocab = {i: bytes([i]) for i in range(256)}
    for special in special_tokens:
        vocab[len(vocab)] = special.encode("utf-8")
    merges: list[tuple[bytes, bytes]] = []
    while len(vocab) < vocab_size:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, count in words.items():
            for pair in pairwise(word):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        vocab[len(vocab)] = best[0] + best[1]
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, count in words.items():
            out: list[bytes] = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return vocab, merges
