"""A hash table from short byte strings to ints, looked up and filled with numpy, a whole batch at a time.

The encoder's hot loop maps every space-separated piece of the text to the slot of its cached ids. With Python
strings that costs a string object and a dict lookup per piece; here the pieces stay in the text's UTF-8 bytes:
a piece of at most 16 bytes *is* its key, packed into two little-endian ``uint64`` words (zero-padded) plus its
length, so keys compare exactly with three integer comparisons and no hash can collide into a wrong answer.
Lookups use open addressing with linear probing (the table is at most half full), in rounds: each round probes
the next slot for every key still unresolved.
"""

from __future__ import annotations

import numpy as np

MAX_KEY_BYTES = 16
_EMPTY = -1
# _LOW_BYTES[k]: a mask of the low k bytes of a uint64
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], dtype=np.uint64)


def pack_keys(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two key words of the pieces ``data[starts[i] : starts[i] + lengths[i]]`` (lengths <= 16).

    ``data`` is a ``uint8`` array with at least 16 readable bytes after every piece start (pad it).
    """
    words = np.ndarray(shape=(len(data) - 7,), dtype="<u8", buffer=data, strides=(1,))  # words[i]: data[i : i + 8]
    low = words[starts] & _LOW_BYTES[np.minimum(lengths, 8)]
    high = words[starts + 8] & _LOW_BYTES[np.clip(lengths - 8, 0, 8)]
    return low, high


class PieceTable:
    """Exact map ``(low, high, length) -> value >= 0`` over keys packed by :func:`pack_keys`."""

    def __init__(self, bits: int = 16) -> None:
        self._allocate(bits)

    def _allocate(self, bits: int) -> None:
        self.bits = bits
        self.count = 0
        self.low = np.zeros(1 << bits, dtype=np.uint64)
        self.high = np.zeros(1 << bits, dtype=np.uint64)
        self.length = np.zeros(1 << bits, dtype=np.int32)
        self.value = np.full(1 << bits, _EMPTY, dtype=np.int32)

    def _home(self, low: np.ndarray, high: np.ndarray, length: np.ndarray) -> np.ndarray:
        mixed = low * np.uint64(0x9E3779B97F4A7C15) ^ high * np.uint64(0xBF58476D1CE4E5B9)
        mixed ^= length.astype(np.uint64) * np.uint64(0x94D049BB133111EB)
        mixed ^= mixed >> np.uint64(31)
        mixed *= np.uint64(0xD6E8FEB86659FD93)
        return (mixed >> np.uint64(64 - self.bits)).astype(np.int64)

    def lookup(self, low: np.ndarray, high: np.ndarray, length: np.ndarray) -> np.ndarray:
        """The value of each key, or -1 where the key is absent."""
        found = np.full(len(low), _EMPTY, dtype=np.int32)
        mask = (1 << self.bits) - 1
        at = self._home(low, high, length)
        # first round over all keys, without index arrays
        value = self.value[at]
        hit = (self.low[at] == low) & (self.high[at] == high) & (self.length[at] == length) & (value != _EMPTY)
        found[hit] = value[hit]
        pending = np.flatnonzero(~hit & (value != _EMPTY))  # slot taken by another key: probe the next one
        at = (at[pending] + 1) & mask
        while len(pending):
            value = self.value[at]
            hit = (self.low[at] == low[pending]) & (self.high[at] == high[pending])
            hit &= (self.length[at] == length[pending]) & (value != _EMPTY)
            found[pending[hit]] = value[hit]
            more = ~hit & (value != _EMPTY)
            pending, at = pending[more], (at[more] + 1) & mask
        return found

    def insert(self, low: np.ndarray, high: np.ndarray, length: np.ndarray, value: np.ndarray) -> None:
        """Add keys that are absent and distinct from each other."""
        if 2 * (self.count + len(low)) > (1 << self.bits):
            old = self.value != _EMPTY
            keys = (self.low[old], self.high[old], self.length[old], self.value[old])
            bits = self.bits
            while 2 * (self.count + len(low)) > (1 << bits):
                bits += 1
            self._allocate(bits)
            self._place(*keys)
        self._place(low, high, length, value)

    def _place(self, low: np.ndarray, high: np.ndarray, length: np.ndarray, value: np.ndarray) -> None:
        mask = (1 << self.bits) - 1
        pending = np.arange(len(low))
        at = self._home(low, high, length)
        owner = np.full(1 << self.bits, -1, dtype=np.int64)
        while len(pending):
            free = self.value[at] == _EMPTY
            # of the keys probing the same free slot, one (the last written) takes it; the others probe on
            owner[at[free]] = pending[free]
            take = free & (owner[at] == pending)
            chosen, where = pending[take], at[take]
            self.low[where], self.high[where] = low[chosen], high[chosen]
            self.length[where], self.value[where] = length[chosen], value[chosen]
            self.count += len(chosen)
            pending, at = pending[~take], (at[~take] + 1) & mask
