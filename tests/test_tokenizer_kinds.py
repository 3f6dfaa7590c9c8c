"""Specification of the corpus tokenizers (bytes, GPT-2 wrapper) and block-wise file encoding."""

import numpy as np
import pytest

from cs336_basics.tokenizer import kinds
from cs336_basics.tokenizer.kinds import EOT, ByteTokenizer, encode_text_file, iter_text_blocks

TEXT = f"héllo wörld 🙂{EOT}second doc{EOT}{EOT}third"


def test_byte_tokenizer_maps_utf8_bytes_and_specials():
    tok = ByteTokenizer()
    expected = list("héllo wörld 🙂".encode()) + [256] + list(b"second doc") + [256, 256] + list(b"third")
    assert tok.encode(TEXT) == expected
    assert tok.vocab_size == 257


def test_byte_tokenizer_round_trips_and_replaces_invalid_utf8():
    tok = ByteTokenizer()
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.decode([0xC3, 65]) == "\ufffdA"


def test_text_blocks_end_at_separators_and_reassemble_the_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT * 50, encoding="utf-8")
    blocks = list(iter_text_blocks(path, block_chars=17))
    assert "".join(blocks) == TEXT * 50
    assert all(b.endswith(EOT) for b in blocks[:-1])


def test_encode_text_file_matches_encode_of_the_whole_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT * 30, encoding="utf-8")
    meta = encode_text_file(path, ByteTokenizer(), tmp_path / "out", progress=False)
    tokens = np.fromfile(tmp_path / "out" / "tokens.bin", dtype=meta["dtype"])
    assert tokens.tolist() == ByteTokenizer().encode(TEXT * 30)
    assert meta["num_tokens"] == len(tokens) and meta["dtype"] == "uint16"


def test_gpt2_without_local_files_explains_how_to_get_them(monkeypatch):
    import tiktoken

    def offline(name):
        raise ConnectionError("offline")

    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(FileNotFoundError, match="TIKTOKEN_CACHE_DIR"):
        kinds.GPT2Tokenizer()
