"""Tokenizer CLIs and ``encode_file``: files on disk equal the in-memory results; metadata; one-line errors."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from cs336_basics.data.text_generators.stories import generate_stories
from cs336_basics.tokenizer import encode_file as encode_file_module
from cs336_basics.tokenizer import train as train_module
from cs336_basics.tokenizer.bpe_train import train_bpe
from cs336_basics.tokenizer.encode_file import encode_file, token_dtype
from cs336_basics.tokenizer.io import load_merges, load_vocab, save_tokenizer_files
from cs336_basics.tokenizer.tokenizer import Tokenizer

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "corpus.txt"
    path.write_text(generate_stories(40_000, seed=5) + "\n  indented\ttext\n\n tail ", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer_files(corpus, tmp_path_factory):
    vocab, merges = train_bpe(corpus, 400, [EOT], num_workers=1)
    return save_tokenizer_files(vocab, merges, tmp_path_factory.mktemp("tok"))


def test_train_cli_writes_files_equal_to_train_bpe_and_reports(corpus, tmp_path, capsys):
    code = train_module.main(
        ["--input", str(corpus), "--vocab-size", "400", "--special-token", EOT, "--out", str(tmp_path), "--no-progress"]
    )
    assert code == 0
    vocab, merges = train_bpe(corpus, 400, [EOT], num_workers=1)
    assert load_vocab(tmp_path / "vocab.json") == vocab
    assert load_merges(tmp_path / "merges.txt") == merges
    report = capsys.readouterr().out
    assert "wall time" in report and "peak memory" in report and "longest learned token" in report


def test_train_cli_missing_input_is_a_one_line_error(tmp_path, capsys):
    code = train_module.main(["--input", str(tmp_path / "nope.txt"), "--vocab-size", "300", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err


@pytest.mark.parametrize("num_workers,chunk_bytes", [(1, 1 << 22), (2, 3000)])
def test_encode_file_tokens_equal_encode_of_whole_text(corpus, tokenizer_files, tmp_path, num_workers, chunk_bytes):
    tok = Tokenizer.from_files(*tokenizer_files, [EOT])
    meta = encode_file(corpus, tok, tmp_path, num_workers=num_workers, progress=False, chunk_bytes=chunk_bytes)
    tokens = np.fromfile(tmp_path / "tokens.bin", dtype=np.uint16)
    assert tokens.tolist() == tok.encode(corpus.read_text(encoding="utf-8"))
    assert meta == json.loads((tmp_path / "meta.json").read_text())
    assert meta["num_tokens"] == len(tokens) and meta["dtype"] == "uint16" and meta["vocab_size"] == 400
    assert meta["special_tokens"] == {EOT: 256}


def test_encode_file_without_special_tokens_chunks_at_safe_whitespace(corpus, tokenizer_files, tmp_path):
    tok = Tokenizer.from_files(*tokenizer_files)
    encode_file(corpus, tok, tmp_path, num_workers=2, progress=False, chunk_bytes=2000)
    tokens = np.fromfile(tmp_path / "tokens.bin", dtype=np.uint16)
    assert tokens.tolist() == tok.encode(corpus.read_text(encoding="utf-8"))


def test_meta_records_tokenizer_file_checksums(corpus, tokenizer_files, tmp_path):
    tok = Tokenizer.from_files(*tokenizer_files, [EOT])
    meta = encode_file(corpus, tok, tmp_path, num_workers=1, progress=False)
    vocab_path, merges_path = tokenizer_files
    assert meta["vocab_sha256"] == hashlib.sha256(vocab_path.read_bytes()).hexdigest()
    assert meta["merges_sha256"] == hashlib.sha256(merges_path.read_bytes()).hexdigest()
    same = Tokenizer(load_vocab(vocab_path), load_merges(merges_path), [EOT])
    other = Tokenizer(load_vocab(vocab_path), load_merges(merges_path)[:-1], [EOT])
    checksum = encode_file_module.tokenizer_checksum
    assert meta["tokenizer_sha256"] == checksum(same) != checksum(other)


def test_token_dtype_is_uint16_when_the_vocab_fits_else_uint32():
    assert token_dtype(2**16) == np.uint16
    assert token_dtype(2**16 + 1) == np.uint32


def test_encode_file_cli_round_trip(corpus, tokenizer_files, tmp_path, capsys):
    vocab_path, merges_path = tokenizer_files
    argv = ["--vocab", str(vocab_path), "--merges", str(merges_path), "--input", str(corpus), "--out", str(tmp_path)]
    assert encode_file_module.main(argv + ["--special-token", EOT, "--no-progress", "--num-workers", "1"]) == 0
    tok = Tokenizer.from_files(vocab_path, merges_path, [EOT])
    tokens = np.fromfile(tmp_path / "tokens.bin", dtype=np.uint16)
    assert tok.decode(tokens.tolist()) == corpus.read_text(encoding="utf-8")
    assert "tokens (uint16)" in capsys.readouterr().out


def test_encode_file_cli_non_utf8_input_is_a_one_line_error(tokenizer_files, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok \xc3\x28 text")
    vocab_path, merges_path = tokenizer_files
    argv = ["--vocab", str(vocab_path), "--merges", str(merges_path), "--input", str(bad), "--out", str(tmp_path)]
    assert encode_file_module.main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not valid UTF-8 at byte 3" in err
