"""The encoder's fast paths: exact ids on open-vocabulary text (most words unseen, so the batched numpy merge
does the work), the byte-level island check, the piece hash table and the batch merger, each against an oracle."""

from __future__ import annotations

import numpy as np
import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

import cs336_basics.tokenizer.tokenizer as tokenizer_module
from cs336_basics.data.text_generators.zipf_text import generate_zipf_text
from cs336_basics.tokenizer.bpe_train import train_bpe
from cs336_basics.tokenizer.piece_table import PieceTable, pack_keys
from cs336_basics.tokenizer.pretokenize import PRETOKEN_RE, WHITESPACE_CHARS, has_island_spaces
from cs336_basics.tokenizer.tokenizer import Tokenizer, _has_island_bytes
from tests._reference_bpe import GPT2_PATTERN as ORACLE_PATTERN  # written out here, not the one under test

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def zipf_merges(tmp_path_factory):
    path = tmp_path_factory.mktemp("zipf") / "train.txt"
    path.write_text(generate_zipf_text(100_000, seed=1), encoding="utf-8")
    return train_bpe(path, 800, [EOT], num_workers=1)


@pytest.fixture(scope="module")
def tiktoken_ids(zipf_merges):
    """tiktoken built from the same merges, returning our ids."""
    vocab, merges = zipf_merges
    ranks = {bytes([b]): b for b in range(256)}
    for a, b in merges:
        ranks[a + b] = len(ranks)
    encoding = tiktoken.Encoding(
        name="same-merges", pat_str=ORACLE_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: len(ranks)}
    )
    ours = {token: i for i, token in Tokenizer(vocab, merges, [EOT]).vocab.items()}
    to_ours = {rank: ours[token] for token, rank in ranks.items()}
    to_ours[len(ranks)] = ours[EOT.encode()]
    return lambda text: [to_ours[t] for t in encoding.encode(text, allowed_special="all")]


def test_open_vocabulary_text_encodes_exactly_like_tiktoken(zipf_merges, tiktoken_ids):
    # another seed: most of its words were never seen in training, so nearly every pre-token is merged from bytes
    text = generate_zipf_text(150_000, seed=2)
    expected = tiktoken_ids(text)
    tokenizer = Tokenizer(*zipf_merges, [EOT])
    assert tokenizer.encode(text) == expected
    assert tokenizer.encode(text) == expected  # again, from the caches
    without_specials = text.replace(EOT, "\n")
    for batch_chars in (500, 1 << 20):  # many small batches (cut at safe positions) or one
        assert Tokenizer(*zipf_merges, [EOT]).encode_array(without_specials, batch_chars).tolist() == tiktoken_ids(
            without_specials
        )


def test_exact_when_the_caches_are_reset_between_batches(zipf_merges, tiktoken_ids, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "_CACHE_LIMIT", 64)
    tokenizer = Tokenizer(*zipf_merges, [EOT])
    text = generate_zipf_text(50_000, seed=3)
    assert tokenizer.encode_array(text, batch_chars=2_000).tolist() == tiktoken_ids(text)


TRICKY = [
    "aaaaaaaaa", "!!!!!!!!", "    ", " \n ", "\u3000 x", "\xa0 y", "\u2028 z", "\u205f ", "x\t y", EOT,
    "exactly8", "sixteen-bytes-ok", "seventeen-bytes-no", "é" * 9, "😀😀😀😀😀", "'s'll", "1,000,000.5",
]  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from(TRICKY) | st.text(max_size=6), max_size=25).map(" ".join))
def test_tricky_text_encodes_exactly_like_tiktoken(zipf_merges, tiktoken_ids, text):
    assert Tokenizer(*zipf_merges, [EOT]).encode(text) == tiktoken_ids(text)


SPACEY = st.text(alphabet=st.sampled_from([" ", "a", "é", "中", "\n", "\t", "\x1c", *WHITESPACE_CHARS]), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(SPACEY, min_size=1, max_size=5))
def test_byte_level_island_check_agrees_with_the_regex(texts):
    joined = " ".join(texts)
    data = np.frombuffer(joined.encode("utf-8"), dtype=np.uint8)
    spaces = np.flatnonzero(data == 32)
    counts = np.array([t.count(" ") + 1 for t in texts])
    joins = spaces[np.cumsum(counts)[:-1] - 1]
    assert _has_island_bytes(data, spaces, joins) == any(has_island_spaces(t) for t in texts)


def test_piece_table_matches_a_dict():
    rng = np.random.default_rng(0)
    words = sorted({bytes(rng.integers(97, 100, size=rng.integers(0, 17)).tolist()) for _ in range(5000)})
    assert len(words) > 1000
    data = np.frombuffer(b"".join(words) + bytes(16), dtype=np.uint8)
    lengths = np.array([len(w) for w in words])
    starts = np.cumsum(lengths) - lengths
    table = PieceTable(bits=4)  # grows while filling
    half = np.arange(len(words)) % 2 == 0
    low, high = pack_keys(data, starts, lengths)
    table.insert(low[half], high[half], lengths[half], np.flatnonzero(half).astype(np.int32))
    found = table.lookup(low, high, lengths)
    assert (found == np.where(half, np.arange(len(words)), -1)).all()


def test_batch_merger_matches_merging_one_word_at_a_time(zipf_merges):
    tokenizer = Tokenizer(*zipf_merges, [EOT])
    ranks = tokenizer._ranks

    def reference(word: str) -> list[int]:  # apply the lowest-ranked merge, leftmost first, until none applies
        ids = [tokenizer._token_to_id[bytes([b])] for b in word.encode()]
        while True:
            candidates = [(ranks[p][0], i) for i, p in enumerate(zip(ids, ids[1:], strict=False)) if p in ranks]
            if not candidates:
                return ids
            rank, i = min(candidates)
            ids[i : i + 2] = [next(m for (a, b), (r, m) in ranks.items() if r == rank)]

    words = sorted(set(PRETOKEN_RE.findall(generate_zipf_text(20_000, seed=4))))[:400] + ["aaaaaaa", " eeeeee"]
    data = "".join(words).encode()
    ids, counts = tokenizer._merger.merge(data, np.array([len(w.encode()) for w in words]))
    assert np.split(ids, np.cumsum(counts)[:-1])[0].tolist() == reference(words[0])
    assert [part.tolist() for part in np.split(ids, np.cumsum(counts)[:-1])] == [reference(w) for w in words]


def test_special_tokens_with_whitespace_encode_exactly_like_tiktoken(zipf_merges):
    vocab, merges = zipf_merges
    specials = ["<| sep |>", " <x>", "\n\n<doc>"]
    ranks = {bytes([b]): b for b in range(256)}
    for a, b in merges:
        ranks[a + b] = len(ranks)
    encoding = tiktoken.Encoding(
        name="specials",
        pat_str=ORACLE_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={s: len(ranks) + i for i, s in enumerate(specials)},
    )
    tokenizer = Tokenizer(vocab, merges, specials)
    ours = {token: i for i, token in tokenizer.vocab.items()}
    to_ours = {rank: ours[token] for token, rank in ranks.items()}
    to_ours.update({len(ranks) + i: ours[s.encode()] for i, s in enumerate(specials)})
    for text in [
        "a <| sep |> b",
        "x <x> y  <x>z",
        "end.\n\n<doc>Start  here\n\n<doc>",
        " <x> <x>  <x>",
        "\t <| sep |>  \t ",
    ]:
        assert tokenizer.encode(text) == [to_ours[t] for t in encoding.encode(text, allowed_special="all")], text
