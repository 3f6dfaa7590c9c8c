"""Specification of the SHA-256 helpers every cache entry and token-array meta.json records."""

import hashlib

import pytest

from cs336_basics.checksums import sha256_file, sha256_text


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 1000])
def test_file_checksum_matches_hashlib_whatever_the_block_boundaries(tmp_path, size):
    data = bytes(range(256)) * 4
    path = tmp_path / "f.bin"
    path.write_bytes(data[:size])
    assert sha256_file(path, block_bytes=8) == sha256_file(path) == hashlib.sha256(data[:size]).hexdigest()


def test_text_checksum_hashes_utf8_and_accepts_bytes():
    assert (
        sha256_text("héllo 🙂") == hashlib.sha256("héllo 🙂".encode()).hexdigest() == sha256_text("héllo 🙂".encode())
    )
    assert sha256_text("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
