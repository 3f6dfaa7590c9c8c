"""A deterministic generator of English-like text with an open, Zipfian vocabulary: the BPE benchmark corpus.

Why a second generator: the stories (:mod:`.stories`) come from a small grammar with about 1,300
word types, so a byte-level BPE trainer runs out of pairs near 2,250 tokens and a 10,000-token training never
exercises its merge loop. This corpus draws words from a lexicon of :data:`NUM_PSEUDO_WORDS` distinct pseudo-words
(built from English-looking syllables and suffixes) behind :data:`FUNCTION_WORDS` (real English function words and
contractions at the head of the distribution), with a Zipf law of exponent :data:`ZIPF_EXPONENT` over the whole
lexicon, so the number of distinct words keeps growing with the corpus size, as in natural text, and BPE finds new
pairs to merge well past 10,000 tokens. The stories stay the default dataset of every experiment; this module does
not change them.

What the text looks like: documents of 1-8 paragraphs separated by ``"\\n"``, sentences of 3-40 words with a
capitalised first word, ``. ? !`` endings, commas (and a few ``;`` ``:``), some sentences in double quotes,
possessive ``'s``, always-capitalised proper names, numbers (years, counts, thousands with commas, decimals,
percentages), and a little unicode: accented Latin pseudo-words, Greek words, CJK words and emoji (about 2% of the
words). ``<|endoftext|>`` follows every document (no newline around it, as in the stories).

Documented statistics (checked in ``tests/test_zipf_text.py``):

- the lexicon word of rank ``r`` (1-based) has probability ``~ r ** -ZIPF_EXPONENT`` among lexicon words; in a few
  MB, the 1,000 most frequent words follow a log-log rank-frequency slope of about ``-ZIPF_EXPONENT``;
- documents average about 1,000 bytes (median about 800); about 2% of the words are non-ASCII and 2% are numbers;
- distinct words keep growing with size (about 59,000 in 2 MB; the stories have about 1,100 at any size), and
  ``train_bpe`` on 1 MB reaches a 5,000-token vocabulary (on the stories it stops near 2,100-2,250 tokens).

Speed: every random choice of a block of documents is drawn with numpy at once; the text is a sequence of "piece"
ids (words and punctuation) whose bytes are gathered from one buffer with index arithmetic, with no Python loop per
word or sentence; Zipf draws over the 200k-word lexicon avoid a binary search (see :class:`_Zipf`). About 20-30 MB/s
of CPU time on one core of a busy 2-core machine (the stories: about 48). The lexicon is built once per process
(about 2 seconds).

Determinism: the lexicon depends only on the constants here (it is the "language"; the seed picks the text). Block
``b`` of seed ``s`` uses ``numpy.random.default_rng([s, b])`` and the output is cut at the first document boundary at
or after ``num_bytes``; so the same ``(num_bytes, seed)`` always gives the same bytes (for a given numpy: the tail
of the Zipf sampler uses floating-point ``**``), and a smaller ``num_bytes`` gives a prefix of a larger one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cs336_basics.data.text_generators.document_blocks import iter_document_blocks, write_chunks_atomically

EOT = "<|endoftext|>"
ZIPF_EXPONENT = 1.05
NUM_PSEUDO_WORDS = 200_000
DOCS_PER_BLOCK = 512
_LEXICON_SEED = 20_240_601

# Real English at the head of the distribution, roughly in frequency order (the rank sets the Zipf weight).
FUNCTION_WORDS = (
    "the of and to a in is that it was for on he with as I his be at by she had not her but from or they this "
    "have an which you were one all we there been their if has said would will so what when who no more up out "
    "them its can into some could than then him only my me other time like our over just these also about after "
    "new two may first well way even because did through now people where most how before very made many down "
    "those should each here good back both much know see get go come make take little old long great day year man "
    "world life don't it's I'm can't didn't that's you're we'll won't I've there's let's"
).split()

_ONSETS = (
    "b c d f g h j k l m n p r s t v w y z bl br ch cl cr dr fl fr gl gr pl pr qu sc sh sk sl sm sn sp st str sw "
    "th tr tw wh wr"
).split() + [""] * 6
_NUCLEI = "a e i o u a e i o e a ai ea ee oo ou ie oa au ei y".split()
_CODAS = "n r s t l m d nd nt st ck ng rk ll ss th sh ft mp lt rd x".split() + [""] * 14
_SUFFIXES = "s ed ing er ly tion ness ment able ful less est ish al ous ive ity".split()
_ACCENTS = {"a": "áàâä", "e": "éèêë", "i": "íî", "o": "óôöø", "u": "úûü", "n": "ñ", "c": "ç"}
_GREEK_CONSONANTS = list("βγδζθκλμνξπρστφχψ")
_GREEK_VOWELS = list("αεηιουωάέήίόύώ")
_EMOJI = [chr(c) for c in range(0x1F600, 0x1F640)] + [chr(c) for c in (0x2600, 0x2603, 0x2728, 0x1F31F, 0x1F680)]
_CJK_CHARS = 2_000  # characters U+4E00 onwards

# Word classes of a word slot and their probabilities.
_CLASSES = ("lexicon", "number", "accented", "greek", "cjk", "emoji")
_CLASS_PROBS = (0.961, 0.020, 0.012, 0.003, 0.003, 0.001)
# Pieces around a word. Before: nothing, an open quote (paragraph start), a space and an open quote; an unquoted
# word's leading space is part of the word's piece. After: possessive, punctuation, close quote, break, in that order.
_PRE = ("", '"', ' "')
_POSS = ("", "'s")
_PUNCT = ("", ",", ";", ":", ".", "?", "!")
_INNER_PROBS = (0.925, 0.065, 0.006, 0.004)  # none , ; : after a word inside a sentence
_END_PROBS = (0.85, 0.09, 0.06)  # . ? ! at the end of a sentence
_CLOSE = ("", '"')
_BREAK = ("", "\n", EOT)


def _zipf_cdf(n: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return np.cumsum(weights) / weights.sum()


def _draw(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """Indices drawn from the distribution with cumulative probabilities ``cdf``."""
    return np.minimum(np.searchsorted(cdf, rng.random(size), side="right"), len(cdf) - 1)


class _Zipf:
    """Sampler of 0-based ranks ``r`` with probability ``~ (r + 1) ** -exponent`` over ``n`` ranks.

    A binary search over a 200k-entry CDF costs ~100 ns a draw (cache misses), which alone would hold the generator
    near 10 MB/s. So the ``head`` most likely ranks come from their exact CDF through a guide table (the bucket of
    ``u`` gives the answer up to a step or two), and the rest by inverting the tail's integral in closed form: rank
    ``r`` (1-based) owns ``[r - 1/2, r + 1/2)`` under the density ``x ** -exponent``, whose mass is ``r ** -exponent``
    to a relative error below ``s(s+1)/(24 r^2)`` (< 1e-7 past rank 1,000).
    """

    def __init__(self, n: int, exponent: float, head: int = 1024, buckets: int = 1 << 14) -> None:
        self.n, self.s, self.head, self.buckets = n, exponent, min(head, n), buckets
        head_w = np.arange(1, self.head + 1, dtype=np.float64) ** -exponent
        self.g_lo, self.g_hi = self._g(self.head + 0.5), self._g(n + 0.5)  # the tail covers x in [head + 1/2, n + 1/2)
        tail_mass = self.g_hi - self.g_lo if n > self.head else 0.0
        total = head_w.sum() + tail_mass
        cdf = np.cumsum(head_w) / total
        self.p_head = cdf[-1] if n > self.head else 1.0
        self.head_cdf = np.append(cdf[:-1], np.inf)  # the last head rank takes everything up to p_head
        # guide[k]: the answer for u = k / buckets; the answer for u in that bucket is at most `steps` further on.
        self.guide = np.searchsorted(self.head_cdf, np.arange(buckets + 1) / buckets, side="right")
        self.steps = int(np.diff(self.guide).max())

    def _g(self, x: float) -> float:
        """An antiderivative of ``x ** -s``."""
        return float(np.log(x)) if self.s == 1.0 else x ** (1.0 - self.s) / (1.0 - self.s)

    def _g_inv(self, y: np.ndarray) -> np.ndarray:
        return np.exp(y) if self.s == 1.0 else (y * (1.0 - self.s)) ** (1.0 / (1.0 - self.s))

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        u = rng.random(size)
        out = self.guide[(u * self.buckets).astype(np.int64)]
        for _ in range(self.steps):
            out += self.head_cdf[out] <= u
        if self.n > self.head:
            tail = u >= self.p_head
            v = (u[tail] - self.p_head) / (1.0 - self.p_head)  # uniform in [0, 1)
            x = self._g_inv(self.g_lo + v * (self.g_hi - self.g_lo))
            out[tail] = np.clip(np.floor(x + 0.5).astype(np.int64) - 1, self.head, self.n - 1)
        return out


def _categorical(u: np.ndarray, probs: tuple[float, ...]) -> np.ndarray:
    """Index ``i`` where ``u`` falls among the cumulative ``probs`` (a few comparisons beat a binary search)."""
    bounds = np.cumsum(probs) / sum(probs)
    out = np.zeros(len(u), dtype=np.int64)
    for b in bounds[:-1]:
        out += u >= b
    return out


def _pick(rng: np.random.Generator, options: list[str], size: int, exponent: float = 0.8) -> list[str]:
    """``size`` Zipf-weighted picks from ``options`` (so syllables, like words, have frequent and rare members)."""
    idx = _draw(rng, _zipf_cdf(len(options), exponent), size)
    return [options[i] for i in idx]


def _pseudo_words(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` candidate words of 1-4 syllables, a fifth of them with a suffix (duplicates possible)."""
    num_syl = rng.choice([1, 2, 3, 4], size=n, p=[0.22, 0.43, 0.25, 0.10])
    total = int(num_syl.sum())
    syllables = [a + b + c for a, b, c in zip(_pick(rng, _ONSETS, total), _pick(rng, _NUCLEI, total),
                                              _pick(rng, _CODAS, total), strict=True)]  # fmt: skip
    suffixes = _pick(rng, _SUFFIXES, n)
    has_suffix = rng.random(n) < 0.2
    words, pos = [], 0
    for i, k in enumerate(num_syl.tolist()):
        word = "".join(syllables[pos : pos + k])
        pos += k
        words.append(word + suffixes[i] if has_suffix[i] else word)
    return words


def _accented(rng: np.random.Generator, words: list[str]) -> list[str]:
    """Each word with one to two of its accentable letters replaced by an accented variant."""
    out = []
    for word in words:
        letters = list(word)
        spots = [i for i, c in enumerate(letters) if c in _ACCENTS]
        if not spots:  # no accentable letter: end the word in an accent instead
            letters.append("é")
        for i in rng.permutation(spots)[: 1 + int(rng.random() < 0.3)]:
            options = _ACCENTS[letters[i]]
            letters[i] = options[int(rng.integers(len(options)))]
        out.append("".join(letters))
    return out


def _greek(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` Greek words of 1-3 consonant-vowel syllables, some with a final sigma."""
    consonants, vowels = _pick(rng, _GREEK_CONSONANTS, 3 * n), _pick(rng, _GREEK_VOWELS, 3 * n)
    syllables = [c + v for c, v in zip(consonants, vowels, strict=True)]
    lengths, finals = rng.integers(1, 4, n).tolist(), (rng.random(n) < 0.4).tolist()
    words = ["".join(syllables[3 * i : 3 * i + k]) for i, k in enumerate(lengths)]
    return [w + "ς" if f else w for w, f in zip(words, finals, strict=True)]


def _cjk(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` words of 1-3 CJK ideographs (Zipf-weighted characters)."""
    chars = _draw(rng, _zipf_cdf(_CJK_CHARS, 0.9), 3 * n)
    lengths = rng.integers(1, 4, n)
    return ["".join(chr(0x4E00 + int(c)) for c in chars[3 * i : 3 * i + k]) for i, k in enumerate(lengths.tolist())]


def _numbers(rng: np.random.Generator) -> list[str]:
    """The number "words", ordered roughly from frequent to rare (small counts and recent years first)."""
    counts = [str(i) for i in range(1, 1_000)]
    years = [str(y) for y in range(2030, 1499, -1)]
    percents = [f"{p}%" for p in (*range(5, 101, 5), *range(1, 100))]
    values, places = rng.lognormal(1.0, 1.2, 6_000), rng.integers(1, 3, 6_000)
    decimals = sorted({f"{x:.{d}f}" for x, d in zip(values, places, strict=True)})
    thousands = sorted({f"{x:,}" for x in rng.integers(1_000, 2_000_000, 6_000).tolist()})
    mixed = [counts, years, percents, decimals, thousands]
    out: list[str] = []
    for i in range(max(map(len, mixed))):  # interleave, so every kind has frequent members
        out.extend(kind[i] for kind in mixed if i < len(kind))
    return list(dict.fromkeys(out))


def _capitalise(word: str) -> str:
    return word[:1].upper() + word[1:]


class _Language:
    """The fixed "language": all pieces in one byte buffer; every word class as piece ids of its members' four
    variants (plain, capitalised, each with or without a leading space) and a Zipf sampler over its members."""

    def __init__(self) -> None:
        rng = np.random.default_rng(_LEXICON_SEED)
        reserved = {w.lower() for w in FUNCTION_WORDS}
        candidates = [w for w in dict.fromkeys(_pseudo_words(rng, int(NUM_PSEUDO_WORDS * 1.6))) if w not in reserved]
        if len(candidates) < NUM_PSEUDO_WORDS:
            raise RuntimeError("the syllable inventory is too small for NUM_PSEUDO_WORDS distinct words")
        pseudo = candidates[:NUM_PSEUDO_WORDS]
        # Shorter words are more frequent (Zipf's law of abbreviation), with noise so lengths overlap.
        order = np.argsort(np.array([len(w) for w in pseudo]) + rng.normal(0.0, 2.0, len(pseudo)), kind="stable")
        pseudo = [pseudo[i] for i in order]
        names = rng.random(len(pseudo)) < 0.06  # proper names: always capitalised
        pseudo = [_capitalise(w) if is_name else w for w, is_name in zip(pseudo, names, strict=True)]
        extra = _pseudo_words(rng, 8_000)
        accented = list(dict.fromkeys(_accented(rng, extra)))
        classes = {
            "lexicon": list(FUNCTION_WORDS) + pseudo,
            "number": _numbers(rng),
            "accented": accented,
            "greek": list(dict.fromkeys(_greek(rng, 3_000))),
            "cjk": list(dict.fromkeys(_cjk(rng, 3_000))),
            "emoji": _EMOJI,
        }
        self.num_function_words = len(FUNCTION_WORDS)
        self._pieces: list[bytes] = []
        # Per class: piece ids of variant v (bit 0: capitalised, bit 1: leading space) of each member, and a sampler.
        self.variants = [
            np.stack([self._add_all([space + (_capitalise(w) if cap else w) for w in classes[c]])
                      for space in ("", " ") for cap in (False, True)])
            for c in _CLASSES
        ]  # fmt: skip
        self.samplers = [_Zipf(len(classes[c]), ZIPF_EXPONENT) for c in _CLASSES]
        self.pre = self._add_all(list(_PRE))
        self.suffix = self._add_all([p + q + r + t for p in _POSS for q in _PUNCT for r in _CLOSE for t in _BREAK])
        self.lengths = np.array([len(p) for p in self._pieces], dtype=np.int32)
        self.starts = (np.cumsum(self.lengths) - self.lengths).astype(np.int32)  # int32: less memory traffic
        self.buffer = np.frombuffer(b"".join(self._pieces), dtype=np.uint8)

    def _add_all(self, texts: list[str]) -> np.ndarray:
        """Append pieces (duplicates are harmless) and return their ids."""
        first = len(self._pieces)
        self._pieces.extend(t.encode("utf-8") for t in texts)
        return np.arange(first, len(self._pieces), dtype=np.int64)


_LANGUAGE: _Language | None = None


def _language() -> _Language:
    global _LANGUAGE
    if _LANGUAGE is None:
        _LANGUAGE = _Language()
    return _LANGUAGE


def _lengths(rng: np.random.Generator, n: int, low: int, high: int, mean: float) -> np.ndarray:
    """``n`` geometric-like lengths with about the given mean, clipped to ``[low, high]``."""
    return np.clip(low - 1 + rng.geometric(1.0 / (mean - low + 1), n), low, high)


def _firsts(sizes: np.ndarray) -> np.ndarray:
    """Boolean mask over ``sizes.sum()`` children marking the first child of each parent."""
    mask = np.zeros(int(sizes.sum()), dtype=bool)
    mask[np.cumsum(sizes) - sizes] = True
    return mask


def _generate_block(seed: int, block: int, num_docs: int) -> tuple[bytes, np.ndarray]:
    """``num_docs`` documents as UTF-8 bytes, plus the byte length of each (separator included)."""
    lang = _language()
    rng = np.random.default_rng([seed, block])
    # Plan: paragraphs per document, sentences per paragraph, words per sentence.
    paras = _lengths(rng, num_docs, 1, 8, 3.5)
    sents = _lengths(rng, int(paras.sum()), 1, 10, 4.0)
    words = _lengths(rng, int(sents.sum()), 3, 40, 15.0)
    num_sents, n = len(words), int(words.sum())
    sent_of_word = np.repeat(np.arange(num_sents), words)
    first_word = _firsts(words)  # of its sentence
    last_word = np.roll(first_word, -1)
    first_sent = _firsts(sents)  # of its paragraph
    para_end = (last_word & np.roll(first_sent, -1)[sent_of_word]).nonzero()[0]  # last word of each paragraph
    doc_end = para_end[np.roll(_firsts(paras), -1)]  # last word of each document
    # Words: a class per slot, then a Zipf draw inside the class; the first word of a sentence is capitalised.
    cls = _categorical(rng.random(n), _CLASS_PROBS)
    rank = np.empty(n, dtype=np.int64)  # 0-based, inside the class
    quoted = rng.random(num_sents) < 0.12
    opens_quote = first_word & quoted[sent_of_word]
    para_start = np.zeros(n, dtype=bool)
    para_start[0] = True
    para_start[para_end[:-1] + 1] = True
    pre = np.where(opens_quote, np.where(para_start, 1, 2), 0)
    variant = first_word + 2 * ~(para_start | opens_quote)
    piece = np.empty(n, dtype=np.int64)
    for c in range(len(_CLASSES)):
        mask = cls == c
        rank[mask] = choice = lang.samplers[c].draw(rng, int(mask.sum()))
        piece[mask] = lang.variants[c][variant[mask], choice]
    # After the word: a possessive on some pseudo-words (never "the's"), commas etc. inside a sentence, an end mark
    # on its last word, the closing quote, the paragraph or document break.
    poss = (cls == 0) & (rank >= lang.num_function_words) & (rng.random(n) < 0.012)
    inner = _categorical(rng.random(n), _INNER_PROBS)
    end = 4 + _categorical(rng.random(num_sents), _END_PROBS)
    punct = np.where(last_word, end[sent_of_word], inner)
    close = last_word & quoted[sent_of_word]
    brk = np.zeros(n, dtype=np.int64)
    brk[para_end] = 1
    brk[doc_end] = 2
    suffix = ((poss * len(_PUNCT) + punct) * len(_CLOSE) + close) * len(_BREAK) + brk
    # Gather the bytes of (pre, word, suffix) of every slot, in order, from the piece buffer.
    table = np.stack([lang.pre[pre], piece, lang.suffix[suffix]], axis=1).ravel()
    lengths = lang.lengths[table]
    ends = np.cumsum(lengths, dtype=np.int32)
    positions = np.repeat(lang.starts[table] - (ends - lengths), lengths) + np.arange(ends[-1], dtype=np.int32)
    data = lang.buffer[positions].tobytes()
    doc_ends = ends[3 * doc_end + 2]
    return data, np.diff(doc_ends, prepend=0)


def iter_zipf_bytes(num_bytes: int, seed: int = 0) -> Iterator[bytes]:
    """Yield the corpus ``generate_zipf_text(num_bytes, seed)`` as UTF-8 chunks (one block of documents each)."""
    return iter_document_blocks(lambda seed, block: _generate_block(seed, block, DOCS_PER_BLOCK), num_bytes, seed)


def generate_zipf_text(num_bytes: int, seed: int = 0) -> str:
    """Whole documents, each followed by ``<|endoftext|>``, totalling at least ``num_bytes`` UTF-8 bytes.

    The text overshoots ``num_bytes`` by less than one document; ``num_bytes=0`` gives ``""``.
    """
    return b"".join(iter_zipf_bytes(num_bytes, seed)).decode("utf-8")


def write_zipf_text(path: str | os.PathLike, num_bytes: int, seed: int = 0) -> Path:
    """Stream ``generate_zipf_text(num_bytes, seed)`` to ``path`` block by block (bounded memory, atomic rename)."""
    return write_chunks_atomically(path, iter_zipf_bytes(num_bytes, seed))
