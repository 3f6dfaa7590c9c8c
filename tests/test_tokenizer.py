"""Tokenizer: ids equal tiktoken's for the same merges; round trips; lazy bounded encode_iterable; IO and errors."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import tiktoken
from hypothesis import given, settings
from hypothesis import strategies as st

from cs336_basics.data.text_generators.stories import generate_stories, write_stories
from cs336_basics.tokenizer.bpe_train import train_bpe
from cs336_basics.tokenizer.io import escape_token, load_merges, load_vocab, save_tokenizer_files, unescape_token
from cs336_basics.tokenizer.tokenizer import Tokenizer
from tests import adapters
from tests._reference_bpe import GPT2_PATTERN as ORACLE_PATTERN  # written out here, not the one under test

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
EOT = "<|endoftext|>"
EOT2 = EOT + EOT


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A vocab of 1000 trained on stories plus multilingual text (so merges cover accents, CJK and emoji)."""
    path = tmp_path_factory.mktemp("bpe") / "corpus.txt"
    multilingual = (FIXTURES / "multilingual.txt").read_text(encoding="utf-8")
    path.write_text(generate_stories(60_000, seed=11) + multilingual * 20, encoding="utf-8")
    return train_bpe(path, 1000, [EOT], num_workers=1)


@pytest.fixture(scope="module")
def tokenizer(trained):
    vocab, merges = trained
    return Tokenizer(vocab, merges, [EOT, EOT2])


@pytest.fixture(scope="module")
def tiktoken_encode(trained, tokenizer):
    """tiktoken built from the same merges (rank = merge order, bytes first), returning *our* ids."""
    vocab, merges = trained
    ranks = {bytes([b]): b for b in range(256)}
    for a, b in merges:
        ranks[a + b] = len(ranks)
    encoding = tiktoken.Encoding(
        name="same-merges",
        pat_str=ORACLE_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={EOT: len(ranks), EOT2: len(ranks) + 1},
    )
    ours = {token: i for i, token in tokenizer.vocab.items()}
    to_ours = {rank: ours[token] for token, rank in ranks.items()}
    to_ours[len(ranks)], to_ours[len(ranks) + 1] = ours[EOT.encode()], ours[EOT2.encode()]
    return lambda text: [to_ours[t] for t in encoding.encode(text, allowed_special="all")]


CASES = {
    "ascii": "Once upon a time, a little dog named Max found a red ball.",
    "accented": "Héllo wörld! Ça va? Naïve café façade — déjà vu, straße.",
    "cjk": "日本語のテキストです。中文文本，包含标点符号。한국어 문장",
    "emoji": "Emoji 😀😀 👍🏽 🇫🇷 ❤️‍🔥 glued😀text",
    "whitespace_runs": "a  b   c\t\td\n\n\ne \n \n  f   \n\n   ",
    "numbers": "1234567890 3.14159 1,000,000 0x1F 2024-06-01 42abc",
    "contractions": "I'm you're we've they'll she's don't it'd Y'ALL'RE '''s",
    "special_adjacent": f"{EOT}{EOT}{EOT}",
    "special_overlapping_longest_first": f"a{EOT2}{EOT}b{EOT2}",
    "special_at_start_and_end": f"{EOT}middle text{EOT}",
    "special_partial": "<|endoftext| <|endof <|endoftext|",
    "trailing_newlines": f"last line{EOT}\n\n\n",
    "only_spaces": "     ",
    "empty": "",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_encode_equals_tiktoken_with_same_merges(tokenizer, tiktoken_encode, name):
    text = CASES[name]
    assert tokenizer.encode(text) == tiktoken_encode(text)


def test_encode_equals_tiktoken_on_multilingual_fixture(tokenizer, tiktoken_encode):
    text = (FIXTURES / "multilingual.txt").read_text(encoding="utf-8")
    assert tokenizer.encode(text) == tiktoken_encode(text)


TRICKY_PIECES = [" ", "  ", "\n", "\r\n", "\t", "\xa0", "\u3000", EOT, EOT2, "<|", "x", "é", "😀", "'s", "9", "!"]
# Characters assigned in this Python's Unicode database only: a code point assigned in a newer Unicode version (e.g.
# U+3D000, CJK Extension H) is a letter to the `regex` package but not to tiktoken's older tables, so the two
# pre-tokenizers legitimately disagree on it; that is a Unicode-version difference, not an encoder bug.
CHARS = st.characters(exclude_categories=("Cn", "Cs"))
TEXTS = st.text(CHARS, max_size=60) | st.lists(
    st.sampled_from(TRICKY_PIECES) | st.text(CHARS, max_size=3), max_size=30
).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXTS)
def test_encode_equals_tiktoken_on_arbitrary_text(tokenizer, tiktoken_encode, text):
    assert tokenizer.encode(text) == tiktoken_encode(text)


@settings(max_examples=200, deadline=None)
@given(TEXTS)
def test_decode_inverts_encode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=999), max_size=30))
def test_decode_never_raises_on_any_id_sequence(tokenizer, ids):
    assert isinstance(tokenizer.decode(ids), str)


def test_decode_replaces_invalid_utf8_with_replacement_character(tokenizer):
    assert tokenizer.decode([0xE6, ord("a")]) == "\ufffda"


def test_decode_unknown_id_raises_value_error(tokenizer):
    with pytest.raises(ValueError, match="not in the vocab"):
        tokenizer.decode([10**6])


def test_adapter_get_tokenizer_encodes_like_tiktoken(trained, tiktoken_encode):
    text = CASES["special_overlapping_longest_first"] + CASES["whitespace_runs"]
    assert adapters.get_tokenizer(*trained, [EOT, EOT2]).encode(text) == tiktoken_encode(text)


def test_doubled_special_is_one_token_when_registered(tokenizer):
    ids = tokenizer.encode(EOT2)
    assert len(ids) == 1 and tokenizer.decode(ids) == EOT2


def test_special_token_missing_from_vocab_is_appended(trained):
    vocab, merges = trained
    tok = Tokenizer(vocab, merges, [EOT, "<pad>"])
    assert tok.vocab[len(vocab)] == b"<pad>"
    assert tok.encode("a<pad>") == [ord("a"), len(vocab)]


def test_special_tokens_are_plain_text_when_not_registered(trained):
    tok = Tokenizer(*trained)
    assert len(tok.encode(EOT)) > 1


def test_encode_iterable_equals_encode_on_multi_mb_file(tokenizer, tmp_path):
    path = write_stories(tmp_path / "stories.txt", 3_000_000, seed=21)
    expected = tokenizer.encode(path.read_text(encoding="utf-8"))
    with open(path, encoding="utf-8") as f:  # the story corpus has no newlines: read fixed-size blocks
        assert list(tokenizer.encode_iterable(iter(lambda: f.read(1 << 16), ""))) == expected


def test_encode_iterable_peak_memory_is_bounded_independent_of_input_size(tokenizer):
    block = generate_stories(1 << 16, seed=22)

    def peak_mib(num_blocks: int) -> float:
        tracemalloc.start()
        for _ in tokenizer.encode_iterable(block for _ in range(num_blocks)):
            pass
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20

    small, large = peak_mib(4), peak_mib(32)  # ~0.25 MB vs ~2 MB of text
    assert large < 1.5 * small + 0.25, f"peak grew from {small:.2f} MiB to {large:.2f} MiB"
    assert large < 2.0, f"peak {large:.2f} MiB for ~2 MB of text"


def test_encode_iterable_is_lazy(tokenizer):
    def lines():
        yield "Once upon a time there was a dog. " * 3000
        raise AssertionError("read past the first chunk before yielding")

    iterator = tokenizer.encode_iterable(lines())
    assert next(iterator) == tokenizer.encode("Once")[0]


@settings(max_examples=200, deadline=None)
@given(TEXTS, st.lists(st.integers(min_value=1, max_value=8), max_size=20), st.integers(min_value=1, max_value=32))
def test_encode_iterable_equals_encode_for_any_chunking(tokenizer, text, sizes, buffer_chars):
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(text[pos : pos + size])
        pos += size
    chunks.append(text[pos:])
    assert list(tokenizer.encode_iterable(chunks, buffer_chars=buffer_chars)) == tokenizer.encode(text)


def test_encode_iterable_does_not_cut_inside_special_or_whitespace_runs(tokenizer):
    text = ("ab \n\n  cd" + EOT2 + " x " * 3) * 50
    chunks = [text[i : i + 7] for i in range(0, len(text), 7)]
    assert list(tokenizer.encode_iterable(chunks, buffer_chars=16)) == tokenizer.encode(text)


def test_escape_round_trips_every_byte_and_mixed_tokens():
    tokens = [bytes([b]) for b in range(256)] + [b" the", "é中😀".encode(), b"\\x41", b"a\\", b"\xe4\xb8", b"\n\t "]
    for token in tokens:
        escaped = escape_token(token)
        assert " " not in escaped and "\n" not in escaped
        assert unescape_token(escaped) == token


def test_printable_utf8_is_stored_readably():
    assert escape_token(" café".encode()) == "\\x20café"


def test_saved_files_load_back_identically(trained, tmp_path):
    vocab, merges = trained
    vocab_path, merges_path = save_tokenizer_files(vocab, merges, tmp_path)
    assert load_vocab(vocab_path) == vocab
    assert load_merges(merges_path) == merges
    tok = Tokenizer.from_files(vocab_path, merges_path, [EOT])
    assert tok.encode("hello there" + EOT) == Tokenizer(vocab, merges, [EOT]).encode("hello there" + EOT)


def test_malformed_merges_line_raises_naming_the_line(tmp_path):
    path = tmp_path / "merges.txt"
    path.write_text("#version: cs336-bpe-merges 1\na b\nabc\n", encoding="utf-8")
    with pytest.raises(ValueError, match="merges.txt:3: malformed merges line"):
        load_merges(path)


def test_malformed_escape_raises():
    with pytest.raises(ValueError, match="malformed escape"):
        unescape_token("ab\\q")


def test_missing_vocab_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt")


def test_merge_with_token_not_in_vocab_raises(trained):
    vocab, merges = trained
    with pytest.raises(ValueError, match="not in the vocab"):
        Tokenizer(vocab, merges + [(b"zzzq", b"qq")])


def test_vocab_without_all_bytes_raises():
    with pytest.raises(ValueError, match="256 bytes"):
        Tokenizer({0: b"a"}, [])
