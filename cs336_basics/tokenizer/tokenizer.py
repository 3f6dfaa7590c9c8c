"""Byte-level BPE encoder/decoder that gives exactly GPT-2's (tiktoken's) ids for the same vocab and merges.

Encoding: special tokens are matched first (longest first); the rest is pre-tokenized with the GPT-2 regex and
merges are applied within each pre-token in rank (creation) order. Speed comes from :mod:`.pretokenize`'s exact
fast path (text splits at spaces into pieces that encode independently, a piece standing for ``" " + piece``) and
from doing everything a batch (about 1 MB of text) at a time:

* the batch's UTF-8 bytes are cut at spaces with numpy, and each piece of up to 16 bytes is looked up, by its
  bytes, in a numpy hash table (:mod:`.piece_table`) giving the slot of its cached ids; no Python object per piece;
* the pieces not found (about one in ten on open-vocabulary text) are decoded together, pre-tokenized together
  (one regex pass over the new pieces joined with spaces; ASCII words need none), their pre-tokens looked up in a
  dict, and the new pre-tokens merged all at once by :class:`.batch_merge.BatchMerger`;
* the ids of the whole batch are gathered from the slot store in one numpy pass.

A space after whitespace (an "island" region, e.g. indentation) is found in the bytes; such text is cut around its
islands, which are pre-tokenized whole and cached by their text. The caches are bounded (reset when full), so
memory stays bounded for any input; a batch takes about 20 times its size while it is encoded, and long text
without special tokens is cut into batches at safe positions.

``encode_iterable`` buffers incoming text and encodes everything up to the last safe cut (a non-whitespace
character followed by whitespace, not inside a special token), so it yields the same ids as ``encode`` on the
concatenation, with memory bounded by the buffer size rather than the input size.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator
from itertools import chain, compress, count, islice, pairwise, repeat
from operator import itemgetter

import numpy as np
import regex

from cs336_basics.tokenizer.batch_merge import BatchMerger
from cs336_basics.tokenizer.io import load_merges, load_vocab
from cs336_basics.tokenizer.piece_table import MAX_KEY_BYTES, PieceTable, pack_keys
from cs336_basics.tokenizer.pretokenize import PRETOKEN_RE, has_island_spaces, iter_regions, special_split_pattern

_LAST_SAFE_CUT_RE = regex.compile(r"(?r)\S\s")
_NEXT_SAFE_CUT_RE = regex.compile(r"\S\s")
_CACHE_LIMIT = 1 << 18  # caches and store are reset before a batch past 4x this many slots or 16x this many ids
_CACHEABLE_CHARS = 64  # longer pieces are encoded but not kept
_BATCH_CHARS = 1 << 20  # text encoded per batch: its new pre-tokens are merged together
_ITERABLE_BATCH_CHARS = 1 << 14  # smaller batches for encode_iterable, whose point is bounded memory
_PLACEHOLDER = " "  # never a piece
_PLACEHOLDER_SLOT = 0
# GPT2_PATTERN for ASCII text: letters are [A-Za-z], numbers [0-9], whitespace the six ASCII White_Space characters
_W = r"\t\n\x0b\x0c\r "
_ASCII_PRETOKEN_RE = re.compile(
    rf"'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{_W}A-Za-z0-9]+|[{_W}]+(?![^{_W}])|[{_W}]+"
)
# every character for which str.isspace() holds
_SPACE_RE = re.compile("[\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]")


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
        self._merger = BatchMerger(self._ranks, [token_to_id[bytes([b])] for b in range(256)], self.vocab_size)
        self._reset_caches()

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

    # Encoding. Every cached value lives in one store: slot s holds the ids
    # ``_store_ids[_slot_start[s] : _slot_start[s] + _slot_size[s]]``. The caches map strings to slots and give a
    # missing key the next free slot on lookup (a ``defaultdict`` whose factory is a counter, so the lookups stay in
    # C); a batch of text becomes an array of slots, one per space-separated piece, the values of the keys the
    # batch added are computed together, and the batch's ids are gathered from the store in one numpy pass.

    def _reset_caches(self) -> None:
        self._slots = count()
        self._store_ids = np.zeros(1 << 16, dtype=np.int32)  # capacity; the first _store_len are in use
        self._store_len = 0
        self._slot_start = np.zeros(1 << 12, dtype=np.int32)
        self._slot_size = np.zeros(1 << 12, dtype=np.int32)
        self._pretoken_slots: defaultdict[str, int] = defaultdict(self._slots.__next__)  # pre-token -> slot
        self._first_slots: defaultdict[str, int] = defaultdict(self._slots.__next__)  # piece starting a region
        self._spaced_slots: defaultdict[str, int] = defaultdict(self._slots.__next__)  # piece -> " " + piece
        self._island_slots: defaultdict[str, int] = defaultdict(self._slots.__next__)  # island region -> slot
        # Neither " " nor a special token is ever a piece (pieces come from splitting at spaces and special tokens):
        # " " stands for a position filled in later, a special token for its id.
        fixed = {_PLACEHOLDER: (), **{s: (i,) for s, i in self._special_ids.items()}}
        slots = [self._spaced_slots[key] for key in fixed]
        assert slots[0] == _PLACEHOLDER_SLOT
        dict.__setitem__(self._first_slots, "", _PLACEHOLDER_SLOT)  # an empty first piece: nothing
        self._piece_table = PieceTable()  # UTF-8 bytes of a piece (<= 16 bytes) -> slot of the ids of " " + piece
        self._store(slots, np.fromiter(chain.from_iterable(fixed.values()), np.int32), list(map(len, fixed.values())))

    def _store(self, slots, ids: np.ndarray, sizes) -> None:
        """Put values (``sizes[k]`` consecutive ``ids`` each) into ``slots``."""
        index = np.asarray(slots, dtype=np.int32)
        if len(index) and index.max() >= len(self._slot_start):
            grow = max(int(index.max()) + 1, 2 * len(self._slot_start)) - len(self._slot_start)
            self._slot_start = np.concatenate((self._slot_start, np.zeros(grow, dtype=np.int32)))
            self._slot_size = np.concatenate((self._slot_size, np.zeros(grow, dtype=np.int32)))
        sizes = np.asarray(sizes, dtype=np.int32)
        self._slot_start[index] = self._store_len + np.cumsum(sizes, dtype=np.int32) - sizes
        self._slot_size[index] = sizes
        end = self._store_len + len(ids)
        if end > len(self._store_ids):
            grown = np.zeros(max(end, 2 * len(self._store_ids)), dtype=np.int32)
            grown[: self._store_len] = self._store_ids[: self._store_len]
            self._store_ids = grown
        self._store_ids[self._store_len : end] = ids
        self._store_len = end

    def _gather(self, slots: np.ndarray) -> np.ndarray:
        """The ids of ``slots``, back to back."""
        sizes = self._slot_size[slots]
        ends = np.cumsum(sizes, dtype=np.int32)
        offsets = np.repeat(self._slot_start[slots] - ends + sizes, sizes)
        offsets += np.arange(len(offsets), dtype=np.int32)
        return self._store_ids[offsets]

    def _fill(self, slots: list[int], tokens: list[str], per_slot: list[int] | np.ndarray) -> None:
        """Store new values: ``slots[k]`` gets the ids of the next ``per_slot[k]`` (> 0) pre-tokens of ``tokens``."""
        if not slots:
            return
        pretokens = self._pretoken_slots
        before = len(pretokens)
        token_slots = _int32_array(map(pretokens.__getitem__, tokens))
        if len(pretokens) > before:  # merge the new pre-tokens, all at once
            new = list(islice(reversed(pretokens), len(pretokens) - before))  # latest first
            joined = "".join(new)
            data = joined.encode("utf-8")
            lengths = _int32_array(map(len, new))
            if len(data) != len(joined):  # UTF-8 lengths: 1 byte per character plus 1 per threshold passed
                code = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
                extra = (code >= 0x80).astype(np.int32) + (code >= 0x800) + (code >= 0x10000)
                lengths += np.add.reduceat(extra, np.cumsum(lengths) - lengths)
            ids, counts = self._merger.merge(data, lengths)
            top = pretokens[new[0]]  # the new keys took consecutive slots, in insertion order
            self._store(np.arange(top, top - len(new), -1), ids, counts)
            _forget_long(pretokens, new)
        per_slot = np.asarray(per_slot, dtype=np.int32)
        sizes = np.add.reduceat(self._slot_size[token_slots], np.cumsum(per_slot, dtype=np.int32) - per_slot)
        self._store(slots, self._gather(token_slots), sizes)

    def _compute_new(
        self,
        slots: np.ndarray,
        spaced_before: int,
        first_before: int,
        new_islands: list[str],
        more: tuple[list[str], list[int]] = ([], []),
    ) -> None:
        """Compute and store the values of the keys added to the caches since they had the given sizes, of the
        pieces ``more`` = (pieces, their slots), and of the new island regions (keys of the island cache).
        """
        spaced, first = self._spaced_slots, self._first_slots
        new = list(islice(reversed(spaced), len(spaced) - spaced_before))
        # the new keys took consecutive slots, in insertion order (new is latest first)
        new_slots = list(range(spaced[new[0]], spaced[new[0]] - len(new), -1)) if new else []
        new += more[0]
        new_slots += more[1]
        unclean = _unclean(new)
        # Compute the new values. Pieces ending in non-whitespace are pre-tokenized together, joined with spaces:
        # that text cuts at each space into the pre-tokens of " " + piece, each first one starting with " "
        # (see pretokenize). The others one by one.
        if unclean:  # rare: the clean pieces first, then the others one by one
            is_clean = [bool(p[-1:].strip()) for p in new]
            clean = list(compress(new, is_clean))
            new_slots_unclean = [slot for slot, ok in zip(new_slots, is_clean, strict=True) if not ok]
            new_slots = list(compress(new_slots, is_clean))
        else:
            clean = new
            new_slots_unclean = []
        new_slots, tokens, per_slot = _pretokenize_joined(clean, new_slots[: len(clean)])
        new_slots += new_slots_unclean
        new_first = list(islice(reversed(first), len(first) - first_before))
        for text in chain((" " + p for p in unclean), new_first, new_islands):
            found = PRETOKEN_RE.findall(text)
            tokens += found
            per_slot.append(len(found))
        island_slots = list(map(self._island_slots.__getitem__, new_islands))
        self._fill(new_slots + list(map(first.__getitem__, new_first)) + island_slots, tokens, per_slot)
        _forget_long(spaced, new)
        _forget_long(first, new_first)

    def _encode_batch_bytes(self, items: list[str], island_flags: list[bool] | None = None) -> np.ndarray:
        """Ids of ``items``, which alternate text and separators, text first; separators are special tokens, or
        island regions where ``island_flags`` says so (text that holds islands is first cut around them).

        The texts are joined with spaces and encoded to UTF-8; the pieces (cut at spaces) are looked up by their
        bytes in the piece table; the first piece of each text stands for itself, the others for " " + piece.
        """
        texts, specials = items[0::2], items[1::2]
        joined = " ".join(texts)
        raw = joined.encode("utf-8")
        size = len(raw)
        data = np.frombuffer(raw + bytes(MAX_KEY_BYTES), dtype=np.uint8)
        spaces = np.flatnonzero(data[:size] == 32)
        # the spaces that join the texts: text k has counts[k] pieces and its last piece ends at a joining space
        counts = np.array(list(map(str.count, texts, repeat(" "))), dtype=np.int64) + 1
        text_end = np.cumsum(counts)  # piece index after each text's last piece
        joins = spaces[text_end[:-1] - 1]
        if island_flags is None and _has_island_bytes(data, spaces, joins):
            return self._encode_batch_bytes(*_cut_islands(items))
        starts = np.concatenate(([0], spaces + 1))
        lengths = np.append(spaces, size) - starts
        short = lengths <= MAX_KEY_BYTES
        low, high = pack_keys(data, starts[short], lengths[short])
        slots = np.full(len(starts), -1, dtype=np.int32)
        slots[short] = self._piece_table.lookup(low, high, lengths[short])
        first_index = text_end - counts  # the first piece of each text stands for itself, not " " + piece
        slots[first_index] = _PLACEHOLDER_SLOT
        missing = np.flatnonzero(slots < 0)
        spaced, first = self._spaced_slots, self._first_slots
        spaced_before, first_before, islands_before = len(spaced), len(first), len(self._island_slots)
        more: tuple[list[str], list[int]] = ([], [])
        if len(missing):
            is_short = short[missing]
            long_pieces = missing[~is_short]
            new_at, where = _distinct_keys(data, starts, lengths, missing[is_short])
            if len(new_at):  # short pieces not in the table: new slots, decoded to strings to compute their values
                new_slots = np.arange(len(new_at), dtype=np.int32) + next(self._slots)
                self._slots = count(int(new_slots[-1]) + 1)
                for cache in (self._pretoken_slots, self._first_slots, self._spaced_slots, self._island_slots):
                    cache.default_factory = self._slots.__next__
                slots[missing[is_short]] = new_slots[where]
                chosen = new_at
                self._piece_table.insert(*pack_keys(data, starts[chosen], lengths[chosen]), lengths[chosen], new_slots)
                more = (_decode_pieces(data, starts[chosen], lengths[chosen]), new_slots.tolist())
            if len(long_pieces):  # long pieces: through the dict
                pieces = _decode_pieces(data, starts[long_pieces], lengths[long_pieces])
                slots[long_pieces] = _int32_array(map(spaced.__getitem__, pieces))
        firsts = [text[: text.find(" ")] if " " in text else text for text in texts]
        slots[first_index] = _int32_array(map(first.__getitem__, firsts))
        if specials:
            if island_flags is None:
                special_slots = _int32_array(map(spaced.__getitem__, specials))
            else:
                islands = self._island_slots
                special_slots = _int32_array(
                    islands[x] if flag else spaced[x] for x, flag in zip(specials, island_flags, strict=True)
                )
            slots = np.insert(slots, text_end[: len(specials)], special_slots)
        new_islands = list(islice(reversed(self._island_slots), len(self._island_slots) - islands_before))
        self._compute_new(slots, spaced_before, first_before, new_islands, more)
        _forget_long(self._island_slots, new_islands)
        return self._gather(slots)

    def encode_array(self, text: str, batch_chars: int = _BATCH_CHARS) -> np.ndarray:
        """Token ids of ``text`` as a numpy ``int32`` array (what :meth:`encode` returns, without the list).

        Text is encoded in batches of about ``batch_chars`` characters (cut at special tokens); a batch takes
        about 20 times its size in memory while it is encoded.
        """
        parts = [text] if self._special_re is None else self._special_re.split(text)
        out: list[np.ndarray] = []
        batch: list[str] = []  # text, special token, text, ...
        size = 0
        for i, part in enumerate(parts):
            if i % 2 == 0 and len(part) > batch_chars:  # cut long text at safe positions (see pretokenize)
                cuts = [0]
                while len(part) - cuts[-1] > batch_chars:
                    found = _NEXT_SAFE_CUT_RE.search(part, cuts[-1] + batch_chars)
                    if found is None:
                        break
                    cuts.append(found.start() + 1)
                for start, end in pairwise(cuts):
                    out.append(self._encode_texts([*batch, part[start:end]]))
                    batch, size = [], 0
                part = part[cuts[-1] :]
            batch.append(part)
            size += len(part)
            if (size >= batch_chars and i % 2) or i == len(parts) - 1:  # batches start with text
                out.append(self._encode_texts(batch))
                batch, size = [], 0
        return np.concatenate(out) if len(out) != 1 else out[0]

    def _encode_texts(self, items: list[str]) -> np.ndarray:
        if self._store_len > 16 * _CACHE_LIMIT or len(self._slot_start) > 4 * _CACHE_LIMIT:
            self._reset_caches()
        return self._encode_batch_bytes(items)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return self.encode_array(text).tolist()

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
                yield from map(int, self.encode_array(buffer[:cut], _ITERABLE_BATCH_CHARS))
                buffer = buffer[cut:]
            parts, size = [buffer], len(buffer)
        yield from map(int, self.encode_array("".join(parts), _ITERABLE_BATCH_CHARS))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; byte sequences that are not valid UTF-8 become U+FFFD."""
        vocab = self.vocab
        try:
            data = b"".join([vocab[i] for i in ids])
        except KeyError as e:
            raise ValueError(f"token id {e.args[0]} is not in the vocab (size {self.vocab_size})") from None
        return data.decode("utf-8", errors="replace")


def _pretokenize_joined(pieces: list[str], slots: list[int]) -> tuple[list[int], list[str], list[int]]:
    """Pre-tokenize ``" " + piece`` for pieces that are non-empty and end in non-whitespace.

    Returns ``(slots, tokens, per_slot)`` for :meth:`Tokenizer._fill`: the pieces' slots (reordered by kind),
    their pre-tokens back to back and how many each has. An ASCII word (letters only) is one pre-token. The other
    pieces, joined with spaces, cut at each space into the pre-tokens of " " + piece, the first of each starting
    with " " (see pretokenize), so one regex pass does them all: ASCII pieces through the standard library's
    ``re`` with an ASCII-only form of the pattern (the same matches on ASCII text, about twice as fast).
    """
    if not pieces:
        return [], [], []
    is_ascii = np.array(list(map(str.isascii, pieces)))
    is_word = is_ascii & np.array(list(map(str.isalpha, pieces)))
    out_slots: list[int] = []
    tokens: list[str] = []
    per_slot: list[int] = []
    for pattern, mask in ((None, is_word), (_ASCII_PRETOKEN_RE, is_ascii & ~is_word), (PRETOKEN_RE, ~is_ascii)):
        if not mask.any():
            continue
        group = pieces if mask.all() else list(compress(pieces, mask.tolist()))
        out_slots += slots if mask.all() else list(compress(slots, mask.tolist()))
        if pattern is None:
            tokens += map(" ".__add__, group)
            per_slot += [1] * len(group)
            continue
        found = pattern.findall(" " + " ".join(group))
        if len(found) == len(group):
            per_slot += [1] * len(group)
        else:
            starts = np.flatnonzero(np.array(list(map(str.startswith, found, repeat(" ")))))
            assert len(starts) == len(group), "a joined piece did not start a pre-token"
            per_slot += np.diff(np.append(starts, len(found))).tolist()
        tokens += found
    return out_slots, tokens, per_slot


def _cut_islands(items: list[str]) -> tuple[list[str], list[bool]]:
    """``items`` (text, special token, text, ...) with each text cut around its island regions (see
    :func:`iter_regions`): ``(items, flags)`` where the items alternate text and separator, text first, and
    ``flags`` says which separators are islands (the others are special tokens)."""
    out: list[str] = []
    flags: list[bool] = []
    for k, item in enumerate(items):
        regions = ((item, True),) if k % 2 else iter_regions(item) if has_island_spaces(item) else ((item, False),)
        for region, separator in regions:
            if separator:
                if len(out) % 2 == 0:  # two separators in a row: empty text between them
                    out.append("")
                out.append(region)
                flags.append(k % 2 == 0)
            else:
                out.append(region)
    return out, flags


def _decode_pieces(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> list[str]:
    """The pieces ``data[starts[i] : starts[i] + lengths[i]]`` (UTF-8, no spaces) as strings, decoded at once."""
    ends = np.cumsum(lengths + 1)
    offsets = np.repeat(starts - ends + lengths + 1, lengths + 1)
    offsets += np.arange(len(offsets))
    gathered = data[offsets]
    gathered[ends - 1] = 32  # each piece followed by a space
    return gathered.tobytes().decode("utf-8").split(" ")[:-1]


def _distinct_keys(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray, at: np.ndarray):
    """Distinct short pieces among the pieces ``at``: ``(first, where)`` with ``at[first]`` one of each distinct
    piece and ``where[i]`` the index in ``first`` of piece ``at[i]``. Grouped by a hash of the key words, then
    checked exactly (a hash collision, never seen in practice, falls back to no grouping).
    """
    low, high = pack_keys(data, starts[at], lengths[at])
    mixed = low * np.uint64(0x9E3779B97F4A7C15) ^ high * np.uint64(0xBF58476D1CE4E5B9)
    mixed ^= lengths[at].astype(np.uint64) * np.uint64(0x94D049BB133111EB)
    _, first, where = np.unique(mixed, return_index=True, return_inverse=True)
    rep = first[where]
    if (low[rep] != low).any() or (high[rep] != high).any() or (lengths[at][rep] != lengths[at]).any():
        return at, np.arange(len(at))
    return at[first], where


def _has_island_bytes(data: np.ndarray, spaces: np.ndarray, joins: np.ndarray) -> bool:
    """Whether a space of the UTF-8 text ``data`` (at ``spaces``, of which ``joins`` were put between texts) follows
    a whitespace character of the GPT-2 pattern, i.e. the text holds an island region (see pretokenize).
    """
    is_join = np.zeros(len(data) + 1, dtype=bool)
    is_join[joins] = True
    at = spaces[~is_join[spaces]]
    at = at[at > 0]
    before = data[at - 1]
    if (((before >= 9) & (before <= 13)) | ((before == 32) & ~is_join[at - 1])).any():
        return True
    at = at[before >= 0x80]  # a space after a multi-byte character: is that character whitespace?
    if not len(at):
        return False
    last, middle, lead = data[at - 1], data[np.maximum(at - 2, 0)], data[np.maximum(at - 3, 0)]
    two = (middle == 0xC2) & ((last == 0x85) | (last == 0xA0))  # U+0085, U+00A0
    three = (lead == 0xE1) & (middle == 0x9A) & (last == 0x80)  # U+1680
    three |= (lead == 0xE2) & (middle == 0x80) & ((last <= 0x8A) | (last == 0xA8) | (last == 0xA9) | (last == 0xAF))
    three |= (lead == 0xE2) & (middle == 0x81) & (last == 0x9F)  # U+205F
    three |= (lead == 0xE3) & (middle == 0x80) & (last == 0x80)  # U+3000
    return bool((two | three).any())


def _int32_array(values: Iterable[int]) -> np.ndarray:
    # list() then numpy runs about twice as fast as np.fromiter over a map
    return np.array(list(values), dtype=np.int32)


def _unclean(pieces: list[str]) -> list[str]:
    """The pieces that are empty or end in whitespace (rare), found without a Python loop when there are none."""
    last_chars = "".join(map(itemgetter(slice(-1, None)), pieces))
    if len(last_chars) == len(pieces) and not _SPACE_RE.search(last_chars):
        return []
    return [p for p in pieces if not p[-1:].strip()]


def _forget_long(cache: dict[str, int], keys: list[str]) -> None:
    """Drop the keys longer than ``_CACHEABLE_CHARS`` (their values stay in the store until the next reset)."""
    if not keys or max(map(len, keys)) <= _CACHEABLE_CHARS:
        return
    for key in keys:
        if len(key) > _CACHEABLE_CHARS:
            cache.pop(key, None)
