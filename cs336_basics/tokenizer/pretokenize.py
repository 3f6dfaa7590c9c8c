"""Pre-tokenization: the GPT-2 regex, special-token splitting, exact fast paths and file chunking.

Why the fast paths are exact. No GPT-2 pre-token contains a non-whitespace character followed by a whitespace
character (letters/numbers/punctuation runs take at most one *leading* space; whitespace runs hold only
whitespace), the alternatives cover every character, and none looks behind. So wherever ``text[p - 1]`` is not
whitespace and ``text[p]`` is, a pre-token ends at ``p`` and ``text[:p]`` and ``text[p:]`` pre-tokenize
independently. Splitting at such "safe" positions lets us:

* split on ``" "`` with ``str.split`` (C speed) wherever every space is preceded by a non-space character, and
  pre-tokenize each *distinct* piece only once (text is Zipfian: a few percent of pieces are distinct);
* cut files into chunks for worker processes at special tokens or, failing those, at safe positions.

Spaces preceded by whitespace ("island" regions, e.g. indentation) fall back to the plain regex.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import regex

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PRETOKEN_RE = regex.compile(GPT2_PATTERN)
# A whitespace run holding a space at a non-first position, from its (safe) start up to the next safe position.
_ISLAND_RE = regex.compile(r"(?<!\s)\s+ \s*\S*")
# Every character the regex module's ``\s`` matches (checked in the tests). A space after one of them is "bad".
WHITESPACE_CHARS = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
)
# A "bad" space: one preceded by whitespace. The standard library's ``re`` finds it faster than ``regex``.
_BAD_SPACE_RE = re.compile("[" + re.escape(WHITESPACE_CHARS) + "] ")
# Safe cut positions in raw bytes: an ASCII non-space byte followed by ASCII whitespace (cut after the first byte).
_SAFE_BYTES_RE = regex.compile(rb"[\x21-\x7e][\t\n\r ]")


def special_split_pattern(special_tokens: list[str]) -> regex.Pattern | None:
    """A capturing regex that splits text at special tokens, longest first (so overlapping ones resolve greedily)."""
    if not special_tokens:
        return None
    alternatives = sorted(set(special_tokens), key=lambda s: (-len(s), s))
    return regex.compile("(" + "|".join(regex.escape(s) for s in alternatives) + ")")


def has_island_spaces(text: str) -> bool:
    """Whether some space in ``text`` follows a whitespace character (so ``text`` holds an island region)."""
    return _BAD_SPACE_RE.search(text) is not None


def iter_regions(text: str) -> Iterator[tuple[str, bool]]:
    """Cut ``text`` at safe positions into ``(region, is_island)`` pieces, in order.

    Non-island regions contain only spaces preceded by non-whitespace, so ``region.split(" ")`` cuts them at safe
    positions; island regions must go through the regex as a whole.
    """
    if not has_island_spaces(text):
        if text:
            yield text, False
        return
    pos = 0
    for m in _ISLAND_RE.finditer(text):
        if m.start() > pos:
            yield text[pos : m.start()], False
        yield m.group(), True
        pos = m.end()
    if pos < len(text):
        yield text[pos:], False


def count_pretokens_in_text(text: str, special_re: regex.Pattern | None) -> Counter[str]:
    """Counts of GPT-2 pre-tokens in ``text``; special tokens are hard boundaries and are not counted."""
    parts = special_re.split(text)[::2] if special_re is not None else [text]
    pieces: Counter[str] = Counter()  # a piece p stands for the segment " " + p ...
    firsts: Counter[str] = Counter()  # ... unless it starts a region, where it stands for p itself
    counts: Counter[str] = Counter()
    for part in parts:
        for region, is_island in iter_regions(part):
            if is_island:
                counts.update(PRETOKEN_RE.findall(region))
            else:
                split = region.split(" ")
                pieces.update(split)
                firsts[split[0]] += 1
    for piece, n in pieces.items():
        n_first = firsts.get(piece, 0)
        if n > n_first:
            for tok in PRETOKEN_RE.findall(" " + piece):
                counts[tok] += n - n_first
        if n_first and piece:
            for tok in PRETOKEN_RE.findall(piece):
                counts[tok] += n_first
    return counts


def _spans_special(window: bytes, cut: int, specials: list[bytes]) -> bool:
    """Whether some occurrence of a special token in ``window`` starts before ``cut`` and ends after it."""
    for sp in specials:
        start = window.find(sp, max(0, cut - len(sp) + 1))
        while start != -1 and start < cut:
            if start + len(sp) > cut:
                return True
            start = window.find(sp, start + 1)
    return False


def find_chunk_boundaries(path: str | os.PathLike, target_chunk_bytes: int, special_tokens: list[str]) -> list[int]:
    """Byte offsets ``[0, ..., size]`` cutting the file into independently tokenizable chunks of ~target size.

    A cut is placed at the next special token after each target offset or, if none lies within 1 MiB (or a special
    token contains whitespace, so a safe position might fall inside one), at the next safe whitespace position.
    """
    size = Path(path).stat().st_size
    specials = [s.encode("utf-8") for s in special_tokens]
    allow_safe = not any(any(c.isspace() for c in s) for s in special_tokens)
    longest = max((len(s) for s in specials), default=0)
    window_bytes = 1 << 20
    bounds = [0]
    with open(path, "rb") as f:
        for target in range(target_chunk_bytes, size, target_chunk_bytes):
            pos = max(target, bounds[-1] + 1)
            while pos < size:
                f.seek(max(0, pos - longest))
                lead = pos - max(0, pos - longest)
                window = f.read(window_bytes + 2 * longest)
                hits = [i for i in (window.find(sp, lead) for sp in specials) if i != -1 and i < lead + window_bytes]
                cut = min(hits) if hits else -1
                if cut == -1 and allow_safe:
                    m = _SAFE_BYTES_RE.search(window, lead, lead + window_bytes)
                    cut = m.start() + 1 if m else -1
                if cut != -1 and not _spans_special(window, cut, specials):
                    bounds.append(pos - lead + cut)
                    break
                pos += window_bytes if cut == -1 else cut - lead + 1
    if bounds[-1] != size:
        bounds.append(size)
    return sorted(set(bounds))


def read_chunk_text(path: str | os.PathLike, start: int, end: int) -> str:
    """Decode bytes ``[start, end)`` of ``path`` as UTF-8, with a one-line error naming the offending offset."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path}: not valid UTF-8 at byte {start + e.start} ({e.reason}); re-encode the file as UTF-8"
        ) from None
