"""BPE training: merges equal a slow reference trainer; exact chunking/pre-tokenization; errors; the speed floor."""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import regex

from cs336_basics.data.text_generators.stories import generate_stories
from cs336_basics.tokenizer.bpe_train import _order_key, train_bpe
from cs336_basics.tokenizer.pretokenize import (
    PRETOKEN_RE,
    WHITESPACE_CHARS,
    count_pretokens_in_text,
    find_chunk_boundaries,
    special_split_pattern,
)
from tests import adapters
from tests._reference_bpe import reference_train_bpe

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
EOT = "<|endoftext|>"


def _random_text(seed: int, n: int, alphabet: list[str]) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


CORPORA = {
    "stories": (lambda: generate_stories(20_000, seed=3), 600, [EOT]),
    "multilingual": (lambda: (FIXTURES / "multilingual.txt").read_text(encoding="utf-8") * 3, 500, [EOT]),
    # a tiny alphabet gives many equal counts, so the tie-break decides most merges
    "ties": (lambda: _random_text(1, 4000, ["a", "b", "c", " ", "ab", "ba "]), 400, []),
    "whitespace_islands": (lambda: _random_text(2, 4000, ["x", "y", " ", "  ", "\n", "\t", "\n  ", "é"]), 360, []),
    "overlapping_specials": (
        lambda: _random_text(3, 3000, ["aa", "b", " ", "<s>", "<s><s>", "s>", "<", "\n"]),
        330,
        ["<s>", "<s><s>"],
    ),
    "no_specials_in_text": (lambda: generate_stories(8_000, seed=4).replace(EOT, "\n"), 400, [EOT, "<pad>"]),
}


@pytest.mark.parametrize("name", sorted(CORPORA))
def test_merges_and_vocab_equal_reference_trainer(tmp_path, name):
    make_text, vocab_size, specials = CORPORA[name]
    text = make_text()
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    vocab, merges = train_bpe(path, vocab_size, specials, num_workers=1)
    ref_vocab, ref_merges = reference_train_bpe(text, vocab_size, specials)
    assert merges == ref_merges
    assert vocab == ref_vocab


@pytest.mark.parametrize("name", ["stories", "whitespace_islands", "overlapping_specials"])
def test_parallel_small_chunks_give_the_same_merges(tmp_path, name):
    make_text, vocab_size, specials = CORPORA[name]
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    serial = train_bpe(path, vocab_size, specials, num_workers=1)
    parallel = train_bpe(path, vocab_size, specials, num_workers=2, chunk_bytes=500)
    assert parallel == serial


def test_tie_goes_to_lexicographically_greatest_pair(tmp_path):
    # pairs (b,a), (' ',a), (a,b) all occur once; (b"b", b"a") is the greatest
    path = tmp_path / "c.txt"
    path.write_text("ba ab", encoding="utf-8")
    _, merges = train_bpe(path, 257, [])
    assert merges == [(b"b", b"a")]


def test_tie_break_compares_whole_byte_strings_not_prefix_padded(tmp_path):
    # after "ab" and "bc" exist, (b"ab", b"c") and (b"a", b"bc") tie; (b"ab", ...) > (b"a", ...) since b"a" < b"ab"
    text = "abc abc abc xab xab xab bcy bcy bcy"
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    _, merges = train_bpe(path, 300, [])
    assert merges == reference_train_bpe(text, 300, [])[1]


def test_heap_order_key_sorts_pairs_by_descending_byte_tuples():
    rng = random.Random(4)
    tokens = [bytes(rng.choice([0, 1, 97, 98, 255]) for _ in range(rng.randint(1, 3))) for _ in range(200)]
    pairs = list({(rng.choice(tokens), rng.choice(tokens)) for _ in range(500)})
    by_key = sorted(pairs, key=lambda p: (_order_key(p[0]), _order_key(p[1])))
    assert by_key == sorted(pairs, reverse=True)


def test_adapter_run_train_bpe_matches_reference(tmp_path):
    text = generate_stories(5_000, seed=8)
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    assert adapters.run_train_bpe(path, 300, [EOT]) == reference_train_bpe(text, 300, [EOT])


def test_vocab_counts_bytes_specials_and_merges(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(generate_stories(10_000, seed=0), encoding="utf-8")
    vocab, merges = train_bpe(path, 300, [EOT, "<pad>"])
    assert len(vocab) == 300 and len(merges) == 300 - 258
    assert set(vocab) == set(range(300))
    assert [vocab[i] for i in range(256)] == [bytes([i]) for i in range(256)]
    assert vocab[256] == EOT.encode() and vocab[257] == b"<pad>"


def test_no_merged_token_contains_part_of_a_special_token(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(("hello<|endoftext|>" * 50) + "|>end<|" * 20, encoding="utf-8")
    vocab, merges = train_bpe(path, 320, [EOT])
    for a, b in merges:
        assert b"<|endoftext" not in a + b and b"endoftext|>" not in a + b


def test_stops_early_when_no_pairs_remain(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("ab ab", encoding="utf-8")
    vocab, merges = train_bpe(path, 1000, [])
    assert merges == [(b"a", b"b"), (b" ", b"ab")]
    assert len(vocab) == 258


def test_whitespace_chars_are_exactly_what_the_regex_calls_whitespace():
    every_code_point = "".join(map(chr, range(sys.maxunicode + 1)))
    assert "".join(regex.findall(r"\s", every_code_point)) == WHITESPACE_CHARS


def test_fast_pretoken_counts_equal_plain_regex():
    alphabet = ["a", "b", " ", "  ", "\n", "\t", "é", "中", "1", "'s", "!", "\xa0", "\u3000", "\x1c", "<|e|>", "😀"]
    special_re = special_split_pattern(["<|e|>"])
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        expected = Counter()
        for part in special_re.split(text)[::2]:
            expected.update(PRETOKEN_RE.findall(part))
        assert count_pretokens_in_text(text, special_re) == expected, text


@pytest.mark.parametrize("specials", [[], [EOT]])
def test_chunk_boundaries_cut_only_where_pretokenization_is_unchanged(tmp_path, specials):
    text = _random_text(5, 20_000, ["word", " ", "  ", "\n", "\n\n", "é", "x" * 30, EOT, " 12", "\t"])
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    data = path.read_bytes()
    bounds = find_chunk_boundaries(path, 700, specials)
    assert bounds[0] == 0 and bounds[-1] == len(data) and len(bounds) > 10
    special_re = special_split_pattern(specials)
    pieces = [data[s:e].decode("utf-8") for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
    chunked = sum((count_pretokens_in_text(p, special_re) for p in pieces), Counter())
    assert chunked == count_pretokens_in_text(text, special_re)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        train_bpe(tmp_path / "nope.txt", 300, [])


def test_empty_file_raises_value_error(tmp_path):
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        train_bpe(tmp_path / "e.txt", 300, [])


def test_vocab_size_below_bytes_plus_specials_raises(tmp_path):
    (tmp_path / "c.txt").write_text("hello")
    with pytest.raises(ValueError, match="at least 258"):
        train_bpe(tmp_path / "c.txt", 257, [EOT, "<pad>"])


def test_non_utf8_input_raises_value_error_naming_offset(tmp_path):
    (tmp_path / "c.txt").write_bytes(b"hello \xff world")
    with pytest.raises(ValueError, match="not valid UTF-8 at byte 6"):
        train_bpe(tmp_path / "c.txt", 300, [])


def test_speed_floor_vocab_500_on_130kb_english(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text(generate_stories(130_000, seed=7), encoding="utf-8")
    start = time.perf_counter()
    train_bpe(path, 500, [EOT])
    assert time.perf_counter() - start < 1.5


@pytest.mark.slow
def test_larger_corpus_parallel_training_equals_reference(tmp_path):
    text = generate_stories(400_000, seed=9) + (FIXTURES / "multilingual.txt").read_text(encoding="utf-8") * 50
    path = tmp_path / "c.txt"
    path.write_text(text, encoding="utf-8")
    assert train_bpe(path, 1200, [EOT], num_workers=2, chunk_bytes=50_000) == reference_train_bpe(text, 1200, [EOT])
