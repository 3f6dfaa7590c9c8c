"""A deterministic generator of short English-like stories: the offline default corpus.

Why generated text: the project must train and compare architectures without any download. The stories are made
from a small grammar (:mod:`.story_vocab`) with characters, places, objects, actions, dialogue,
numbers, accented names and the occasional emoji; documents are separated by ``<|endoftext|>`` (TinyStories
style). Each story fixes a hero, a friend, an object and its colour, a place and an age up front and mentions them
again later, so there is long-range structure to learn: recalling "the *turquoise* compass" at the end requires
remembering sentence three. Word choices inside each slot follow a Zipf law with exponent
:data:`.story_vocab.ZIPF_EXPONENT`.

Documented statistics (checked in ``tests/test_stories.py``):

- each story has ``3 + [MIN_BODY_SENTENCES, MAX_BODY_SENTENCES] + 1`` sentences, about 250 to 1,500 bytes
  (mean about 770);
- the hero named in the first sentence appears at least twice more in the same story;
- within a slot, the ``r``-th word (1-based) has frequency ``~ r ** -ZIPF_EXPONENT``.
- over all words (about 1,300 types), the 100 most frequent follow a rank-frequency slope of about -0.75 on
  log-log axes (natural English: about -1); the rarer tail (made-up names and towns) falls off faster.

Speed: every random choice of a block of stories is drawn with numpy at once; a story is a sequence of "piece" ids
(template literals and slot words), expanded with index arithmetic and joined by one ``bytes.join`` per block, with
no Python loop per word or sentence. Throughput is well above 20 MB/s on one core (see ``benchmarks/bench_stories.py``).

Determinism: block ``b`` of seed ``s`` uses ``numpy.random.default_rng([s, b])`` and the output is cut at the first
story boundary at or after ``num_bytes``; so the same ``(num_bytes, seed)`` always gives the same bytes, and a smaller
``num_bytes`` gives a prefix of a larger one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cs336_basics.data.text_generators import story_vocab as sv
from cs336_basics.data.text_generators.document_blocks import iter_document_blocks, write_chunks_atomically

EOT = "<|endoftext|>"
MIN_BODY_SENTENCES = 4
MAX_BODY_SENTENCES = 24
STORIES_PER_BLOCK = 256

_SLOT_RE = re.compile(r"\{([A-Z_]+)\}")


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return np.cumsum(weights) / weights.sum()


def _weights_cdf(weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return np.cumsum(w) / w.sum()


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """Indices drawn from the distribution with cumulative probabilities ``cdf``."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


class _Grammar:
    """The grammar compiled to integer tables: pieces in one byte buffer, templates as arrays of piece/slot codes.

    A template code ``c >= 0`` is a literal piece id; ``c < 0`` is slot number ``-1 - c`` of ``self.slots``.
    """

    def __init__(self) -> None:
        self._piece_ids: dict[str, int] = {}
        self._pieces: list[bytes] = []
        self.slots = list(sv.WORDS)
        self.slot_pieces = [np.array([self._piece(w) for w in sv.WORDS[s]], dtype=np.int64) for s in self.slots]
        self.slot_cdfs = [_zipf_cdf(len(sv.WORDS[s]), sv.ZIPF_EXPONENT) for s in self.slots]
        # Groups 0-2: intro sentences; 3: body; 4: ending. Sentences after the first start with a space; the
        # ending carries the document separator.
        groups = [*sv.INTRO_GROUPS, sv.BODY, sv.ENDINGS]
        codes: list[int] = []
        self.template_offsets: list[int] = []
        self.template_lengths: list[int] = []
        self.group_first: list[int] = []
        self.group_cdfs: list[np.ndarray] = []
        for g, group in enumerate(groups):
            self.group_first.append(len(self.template_offsets))
            self.group_cdfs.append(_weights_cdf([w for _, w in group]))
            for text, _ in group:
                text = ("" if g == 0 else " ") + text + (EOT if g == len(groups) - 1 else "")
                compiled = self._compile(text)
                self.template_offsets.append(len(codes))
                self.template_lengths.append(len(compiled))
                codes.extend(compiled)
        self.codes = np.array(codes, dtype=np.int64)
        self.template_offsets_arr = np.array(self.template_offsets, dtype=np.int64)
        self.template_lengths_arr = np.array(self.template_lengths, dtype=np.int64)
        self.piece_lengths = np.array([len(p) for p in self._pieces], dtype=np.int64)
        self.piece_bytes = np.empty(len(self._pieces), dtype=object)
        self.piece_bytes[:] = self._pieces

    def _piece(self, text: str) -> int:
        if text not in self._piece_ids:
            self._piece_ids[text] = len(self._pieces)
            self._pieces.append(text.encode("utf-8"))
        return self._piece_ids[text]

    def _compile(self, text: str) -> list[int]:
        parts = _SLOT_RE.split(text)  # literal, slot, literal, slot, ..., literal
        out: list[int] = []
        for i, part in enumerate(parts):
            if i % 2 == 1:
                out.append(-1 - self.slots.index(part))
            elif part:
                out.append(self._piece(part))
        return out


_GRAMMAR: _Grammar | None = None


def _grammar() -> _Grammar:
    global _GRAMMAR
    if _GRAMMAR is None:
        _GRAMMAR = _Grammar()
    return _GRAMMAR


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for each pair, without a Python loop."""
    total = int(lengths.sum())
    run_starts = np.cumsum(lengths) - lengths
    return np.repeat(starts - run_starts, lengths) + np.arange(total)


def _generate_block(seed: int, block: int, num_stories: int) -> tuple[bytes, np.ndarray]:
    """``num_stories`` stories as UTF-8 bytes, plus the byte length of each story (separator included)."""
    g = _grammar()
    rng = np.random.default_rng([seed, block])
    # Sentence plan: group of every sentence of every story.
    num_sentences = rng.integers(MIN_BODY_SENTENCES, MAX_BODY_SENTENCES + 1, num_stories) + 4
    story_of_sentence = np.repeat(np.arange(num_stories), num_sentences)
    position = np.arange(len(story_of_sentence)) - np.repeat(np.cumsum(num_sentences) - num_sentences, num_sentences)
    last = np.repeat(num_sentences - 1, num_sentences)
    group = np.where(position < 3, position, np.where(position == last, 4, 3))
    template = np.empty(len(group), dtype=np.int64)
    for gi, cdf in enumerate(g.group_cdfs):
        mask = group == gi
        template[mask] = g.group_first[gi] + _draw(rng, cdf, int(mask.sum()))
    # Expand templates into piece/slot codes, remembering which story each code belongs to.
    lengths = g.template_lengths_arr[template]
    codes = g.codes[_ragged_arange(g.template_offsets_arr[template], lengths)]
    story_of_code = np.repeat(story_of_sentence, lengths)
    # Fill slots: bound slots once per story, free slots at every use.
    pieces = codes.copy()
    bound: dict[str, np.ndarray] = {}
    for k, name in enumerate(g.slots):
        if name in sv.BOUND_SLOTS:
            bound[name] = _draw(rng, g.slot_cdfs[k], num_stories)
    clash = bound["FRIEND"] == bound["HERO"]
    while clash.any():
        bound["FRIEND"][clash] = _draw(rng, g.slot_cdfs[g.slots.index("FRIEND")], int(clash.sum()))
        clash = bound["FRIEND"] == bound["HERO"]
    for k, name in enumerate(g.slots):
        mask = codes == -1 - k
        if name in bound or name in sv.DERIVED_SLOTS:
            choice = bound[sv.DERIVED_SLOTS.get(name, name)][story_of_code[mask]]
        else:
            choice = _draw(rng, g.slot_cdfs[k], int(mask.sum()))
        pieces[mask] = g.slot_pieces[k][choice]
    piece_lengths = g.piece_lengths[pieces]
    data = b"".join(g.piece_bytes[pieces].tolist())
    story_bytes = np.bincount(story_of_code, weights=piece_lengths, minlength=num_stories).astype(np.int64)
    return data, story_bytes


def iter_story_bytes(num_bytes: int, seed: int = 0) -> Iterator[bytes]:
    """Yield the corpus ``generate_stories(num_bytes, seed)`` as UTF-8 chunks (one block of stories each)."""
    return iter_document_blocks(lambda seed, block: _generate_block(seed, block, STORIES_PER_BLOCK), num_bytes, seed)


def generate_stories(num_bytes: int, seed: int = 0) -> str:
    """Whole stories, each followed by ``<|endoftext|>``, totalling at least ``num_bytes`` UTF-8 bytes.

    The text overshoots ``num_bytes`` by less than one story; ``num_bytes=0`` gives ``""``.
    """
    return b"".join(iter_story_bytes(num_bytes, seed)).decode("utf-8")


def write_stories(path: str | os.PathLike, num_bytes: int, seed: int = 0) -> Path:
    """Stream ``generate_stories(num_bytes, seed)`` to ``path`` block by block (bounded memory, atomic rename)."""
    return write_chunks_atomically(path, iter_story_bytes(num_bytes, seed))
