"""BPE merges for many pre-tokens at once, in a few numpy passes over one flat array.

The encoder meets a new pre-token (one not in its caches) about once every ten words on open-vocabulary text; a
Python merge loop per pre-token costs tens of microseconds each and dominated encoding. Here the new pre-tokens of
a whole batch are concatenated into one array of token ids with a word index per element, and every round applies,
in every word at once, the lowest-ranked merge that word still has -- the same order as the one-word-at-a-time
loop, so the ids are identical:

* within one word, the lowest-ranked adjacent pair is merged at each of its (non-overlapping, leftmost-first)
  occurrences; merging it cannot create a pair of a lower rank (a merge's result only appears in later merges), so
  this equals merging those occurrences one by one;
* the ranks of adjacent pairs are kept in an array and only the pairs next to a merge are looked up again (a
  256 x 256 table for the initial byte pairs, a binary search over the sorted pair keys for later ones);
* words with no mergeable pair left are moved out, so a round costs time in proportion to the words still merging.

The number of rounds is the largest number of distinct merges any word of the batch needs (about 10-20 on English).
"""

from __future__ import annotations

import numpy as np

_NO_RANK = np.iinfo(np.int32).max
# odd 64-bit multipliers for the pair hash (the first is 2**64 / golden ratio; the rest from a fixed-seed generator)
_HASH_MULTIPLIERS = [np.uint64(0x9E3779B97F4A7C15)] + [
    np.uint64(m | 1) for m in np.random.default_rng(0).integers(1 << 62, 1 << 63, size=31, dtype=np.uint64).tolist()
]


class BatchMerger:
    """Applies BPE merges, given as ``{(left id, right id): (rank, merged id)}``, to batches of byte strings."""

    def __init__(self, ranks: dict[tuple[int, int], tuple[int, int]], byte_ids: list[int], vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.byte_ids = np.asarray(byte_ids, dtype=np.int32)
        count = len(ranks)
        keys = np.fromiter((a * vocab_size + b for a, b in ranks), dtype=np.uint64, count=count)
        rank = np.fromiter((r for r, _ in ranks.values()), dtype=np.int32, count=count)
        merged = np.fromiter((m for _, m in ranks.values()), dtype=np.int32, count=count)
        self.merged_by_rank = np.zeros(int(rank.max()) + 1 if count else 1, dtype=np.int32)
        self.merged_by_rank[rank] = merged
        # An open-addressing hash table of the pair keys (about 8 slots per key, linear probing): a key hashes to
        # slot h (a multiplicative hash, the top bits of key * _HASH_MULTIPLIER) and sits in one of the slots
        # h, h + 1, ..., h + self.max_probe. Placing the keys in order of h gives each the first free slot.
        self.hash_bits = max(4, int(count).bit_length() + 3)
        step = np.arange(count)
        best = None
        for multiplier in _HASH_MULTIPLIERS:  # the first that needs at most one extra probe, else the best
            home = self._hash(keys, multiplier)
            order = np.argsort(home, kind="stable")
            slots = np.maximum.accumulate(home[order] - step) + step if count else step
            probe = int((slots - home[order]).max()) if count else 0
            if best is None or probe < best[0]:
                best = (probe, multiplier, order, slots)
            if probe <= 1:
                break
        self.max_probe, self.multiplier, order, slots = best
        table_size = (1 << self.hash_bits) + self.max_probe + 1
        self.table_keys = np.full(table_size, np.iinfo(np.uint64).max, dtype=np.uint64)  # never a pair key
        self.table_ranks = np.full(table_size, _NO_RANK, dtype=np.int32)
        self.table_keys[slots] = keys[order]
        self.table_ranks[slots] = rank[order]
        # rank of the merge of the byte pair (x, y), at index 256 * x + y
        byte_ids = self.byte_ids.astype(np.uint64)
        self.byte_pair_ranks = self._lookup_keys(
            (byte_ids[:, None] * np.uint64(vocab_size) + byte_ids[None, :]).ravel()
        )

    def _hash(self, keys: np.ndarray, multiplier: np.uint64) -> np.ndarray:
        return ((keys * multiplier) >> np.uint64(64 - self.hash_bits)).astype(np.int64)

    def _lookup_keys(self, keys: np.ndarray) -> np.ndarray:
        home = self._hash(keys, self.multiplier)
        found = np.full(len(keys), _NO_RANK, dtype=np.int32)
        for probe in range(self.max_probe + 1):
            slot = home + probe
            found = np.where(self.table_keys[slot] == keys, self.table_ranks[slot], found)
        return found

    def _lookup(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return self._lookup_keys(left.astype(np.uint64) * np.uint64(self.vocab_size) + right.astype(np.uint64))

    def merge(self, data: bytes, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Merge each word of ``data`` (words back to back, ``lengths`` bytes each, all > 0).

        Returns ``(ids, counts)``: the words' token ids back to back and the number of tokens of each word.
        """
        num_words = len(lengths)
        raw = np.frombuffer(data, dtype=np.uint8)
        word = np.arange(num_words, dtype=np.int32)  # the original index of each word still merging
        sizes = np.array(lengths, dtype=np.int64)  # tokens of each word still merging (a copy: it shrinks)
        ids = self.byte_ids[raw]
        # rank[i]: rank of the merge of tokens i and i + 1, _NO_RANK if none or if i ends its word
        rank = np.full(len(raw), _NO_RANK, dtype=np.int32)
        last = np.cumsum(sizes) - 1
        if len(raw) > 1:
            rank[:-1] = self.byte_pair_ranks[raw[:-1].astype(np.int32) * 256 + raw[1:]]
            rank[last] = _NO_RANK
        done_ids: list[np.ndarray] = []
        done_words: list[np.ndarray] = []
        done_sizes: list[np.ndarray] = []
        while len(ids):
            starts = np.cumsum(sizes) - sizes
            best = np.minimum.reduceat(rank, starts)
            finished = best == _NO_RANK
            num_finished = np.count_nonzero(finished)
            if num_finished:
                # move finished words out when they hold an eighth of the tokens (or all): they only cost passes
                finished_tokens = int(sizes[finished].sum())
                if num_finished == len(best) or 8 * finished_tokens >= len(ids):
                    gone = np.repeat(finished, sizes)
                    done_ids.append(ids[gone])
                    done_words.append(word[finished])
                    done_sizes.append(sizes[finished])
                    if num_finished == len(best):
                        break
                    keep = ~gone
                    ids, rank = ids[keep], rank[keep]
                    word, sizes, best = word[~finished], sizes[~finished], best[~finished]
                    starts = np.cumsum(sizes) - sizes
                else:
                    best[finished] = -1  # matches no rank
            at = np.flatnonzero(rank == np.repeat(best, sizes))
            if len(at) > 1 and (np.diff(at) == 1).any():  # overlapping occurrences of a pair (x, x)
                at = _leftmost_occurrences(at)
            ids[at] = self.merged_by_rank[rank[at]]
            # each merge removes a token of its word
            sizes -= np.bincount(np.searchsorted(starts, at, side="right") - 1, minlength=len(sizes))
            keep = np.ones(len(ids), dtype=bool)
            keep[at + 1] = False
            ids, rank = ids[keep], rank[keep]
            at -= np.arange(len(at), dtype=at.dtype)  # positions of the merged tokens after the removals
            # the pairs that changed: (merged, next) and (previous, merged), unless they cross a word boundary
            word_start = np.zeros(len(ids) + 1, dtype=bool)
            word_start[np.cumsum(sizes) - sizes] = True
            word_start[-1] = True
            changed = np.concatenate((at, at - 1))  # repeats are harmless: they get the same rank
            changed = changed[changed >= 0]
            changed = changed[~word_start[changed + 1]]
            rank[at] = _NO_RANK
            rank[changed] = self._lookup(ids[changed], ids[changed + 1])
        all_words = np.concatenate(done_words)
        order = np.argsort(all_words)
        counts = np.concatenate(done_sizes)
        # reorder the finished words' runs of ids into the original word order
        run_start = np.cumsum(counts) - counts
        counts_sorted = counts[order]
        offsets = np.repeat(run_start[order] - np.cumsum(counts_sorted) + counts_sorted, counts_sorted)
        offsets += np.arange(len(offsets))
        return np.concatenate(done_ids)[offsets], counts_sorted


def _leftmost_occurrences(at: np.ndarray) -> np.ndarray:
    """Of sorted pair positions, keep in each run of consecutive ones the 1st, 3rd, ... (leftmost-first, no overlap)."""
    index = np.arange(len(at))
    run_start = np.concatenate(([True], np.diff(at) != 1))
    start_of = np.maximum.accumulate(np.where(run_start, index, 0))
    return at[(index - start_of) % 2 == 0]
