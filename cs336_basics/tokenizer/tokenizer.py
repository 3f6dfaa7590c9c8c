"""Byte-level BPE encoder/decoder that gives exactly GPT-2's (tiktoken's) ids for the same vocab and merges.

Encoding: special tokens are matched first (longest first); the rest is pre-tokenized with the GPT-2 regex and
merges are applied within each pre-token in rank (creation) order. Speed comes from :mod:`.pretokenize`'s exact
fast path: text is split on spaces with ``str.split`` and each distinct piece is encoded once and cached
(``piece -> ids``); pieces then expand through C-level ``map``/``chain`` with no Python work per cached piece.
The caches are bounded (cleared when full), so memory stays bounded for any input.

``encode_iterable`` buffers incoming text and encodes everything up to the last safe cut (a non-whitespace
character followed by whitespace, not inside a special token), so it yields the same ids as ``encode`` on the
concatenation, with memory bounded by the buffer size rather than the input size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from itertools import chain, islice, pairwise

import regex

from cs336_basics.tokenizer.io import load_merges, load_vocab
from cs336_basics.tokenizer.pretokenize import PRETOKEN_RE, iter_regions, special_split_pattern

_LAST_SAFE_CUT_RE = regex.compile(r"(?r)\S\s")
_CACHE_LIMIT = 1 << 18
_CACHEABLE_CHARS = 64


class _Cache(dict):
    """A dict that computes missing values with ``compute`` and clears itself when it grows past its limit."""

    def __init__(self, compute: Callable[[str], tuple[int, ...]], limit: int = _CACHE_LIMIT) -> None:
        super().__init__()
        self.compute = compute
        self.limit = limit

    def __missing__(self, key: str) -> tuple[int, ...]:
        value = self.compute(key)
        if len(key) <= _CACHEABLE_CHARS:
            if len(self) >= self.limit:
                self.clear()
            self[key] = value
        return value


class Tokenizer:
    """Byte-level BPE tokenizer: ``encode``, ``encode_iterable`` and ``decode``."""

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: list[str] | None = None,
    ) -> None:
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges = list(merges)
        self.source_files: tuple[str, str] | None = None  # (vocab, merges) paths when loaded with from_files
        token_to_id: dict[bytes, int] = {}
        for i in sorted(self.vocab):
            token_to_id.setdefault(self.vocab[i], i)
        missing = [b for b in range(256) if bytes([b]) not in token_to_id]
        if missing:
            raise ValueError(f"vocab lacks {len(missing)} single-byte tokens (e.g. {bytes([missing[0]])!r}); "
                             "a byte-level vocab must contain all 256 bytes")  # fmt: skip
        self.special_tokens = list(dict.fromkeys(special_tokens or []))
        if any(not s for s in self.special_tokens):
            raise ValueError("special_tokens contains an empty string; remove it")
        for s in self.special_tokens:
            b = s.encode("utf-8")
            if b not in token_to_id:
                new_id = max(self.vocab, default=-1) + 1
                self.vocab[new_id] = b
                token_to_id[b] = new_id
        self._token_to_id = token_to_id
        self._special_ids = {s: token_to_id[s.encode("utf-8")] for s in self.special_tokens}
        self._special_re = special_split_pattern(self.special_tokens)
        self._max_special = max((len(s) for s in self.special_tokens), default=0)

        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}  # (left id, right id) -> (rank, merged id)
        for rank, (left, right) in enumerate(self.merges):
            for part in (left, right, left + right):
                if part not in token_to_id:
                    raise ValueError(f"merge {rank} ({left!r}, {right!r}) uses token {part!r} that is not in the vocab")
            self._ranks.setdefault((token_to_id[left], token_to_id[right]), (rank, token_to_id[left + right]))
        self._byte_ids = [token_to_id[bytes([b])] for b in range(256)]
        self._pretoken_cache = _Cache(self._encode_pretoken)
        self._first_cache = _Cache(self._encode_segment)  # a piece that starts a region
        self._spaced_cache = _Cache(lambda piece: self._encode_segment(" " + piece))  # " " + piece

    @classmethod
    def from_files(
        cls,
        vocab_filepath: str | os.PathLike,
        merges_filepath: str | os.PathLike,
        special_tokens: list[str] | None = None,
    ) -> Tokenizer:
        """Load a tokenizer from ``vocab.json`` and ``merges.txt`` (format in :mod:`cs336_basics.tokenizer.io`)."""
        tokenizer = cls(load_vocab(vocab_filepath), load_merges(merges_filepath), special_tokens)
        tokenizer.source_files = (str(vocab_filepath), str(merges_filepath))
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return max(self.vocab) + 1

    def _encode_pretoken(self, pretoken: str) -> tuple[int, ...]:
        ids = [self._byte_ids[b] for b in pretoken.encode("utf-8")]
        ranks = self._ranks
        while len(ids) > 1:
            best = None
            for pair in pairwise(ids):
                found = ranks.get(pair)
                if found is not None and (best is None or found[0] < best[0]):
                    best, best_pair = found, pair
            if best is None:
                break
            (a, b), merged, out, i = best_pair, best[1], [], 0
            while i < len(ids):
                if i + 1 < len(ids) and ids[i] == a and ids[i + 1] == b:
                    out.append(merged)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        return tuple(ids)

    def _encode_segment(self, segment: str) -> tuple[int, ...]:
        cache = self._pretoken_cache
        return tuple(chain.from_iterable(cache[tok] for tok in PRETOKEN_RE.findall(segment)))

    def _encode_ordinary(self, text: str, out: list[int]) -> None:
        first, spaced = self._first_cache, self._spaced_cache
        for region, is_island in iter_regions(text):
            if is_island:
                out.extend(self._encode_segment(region))
                continue
            pieces = region.split(" ")
            if pieces[0]:
                out.extend(first[pieces[0]])
            out.extend(chain.from_iterable(map(spaced.__getitem__, islice(pieces, 1, None))))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        out: list[int] = []
        if self._special_re is None:
            self._encode_ordinary(text, out)
            return out
        for i, part in enumerate(self._special_re.split(text)):
            if i % 2:
                out.append(self._special_ids[part])
            elif part:
                self._encode_ordinary(part, out)
        return out

    def _safe_cut(self, buffer: str) -> int:
        """The last position where ``buffer`` can be cut without changing its encoding, or 0 if none."""
        end = len(buffer) - self._max_special
        while end > 0:
            m = _LAST_SAFE_CUT_RE.search(buffer, 0, end + 1)
            if m is None:
                return 0
            cut = m.start() + 1
            spans = [
                start
                for s in self.special_tokens
                for start in range(max(0, cut - len(s) + 1), cut)
                if buffer.startswith(s, start)
            ]
            if not spans:
                return cut
            end = min(spans)
        return 0

    def encode_iterable(self, iterable: Iterable[str], buffer_chars: int = 1 << 16) -> Iterator[int]:
        """Lazily yield the ids of the concatenation of ``iterable`` (e.g. a file's lines), in bounded memory."""
        parts: list[str] = []
        size = 0
        for text in iterable:
            parts.append(text)
            size += len(text)
            if size < buffer_chars:
                continue
            buffer = "".join(parts)
            cut = self._safe_cut(buffer)
            if cut:
                yield from self.encode(buffer[:cut])
                buffer = buffer[cut:]
            parts, size = [buffer], len(buffer)
        yield from self.encode("".join(parts))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD."""
        vocab = self.vocab
        try:
            data = b"".join([vocab[i] for i in ids])
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is not in the vocab (size {self.vocab_size})") from None
        return data.decode("utf-8", errors="replace")
