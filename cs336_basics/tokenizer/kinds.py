"""The three kinds of tokenizer a prepared corpus can use, behind one small interface (``encode``, ``decode``,
``vocab_size``, ``special_tokens``), and the step that turns a text file into a ``tokens.bin`` array.

- ``bytes``: :class:`ByteTokenizer`, ids 0-255 are the UTF-8 bytes and the special tokens follow (fast, numpy).
- ``bpe``: this package's byte-level BPE (:class:`~cs336_basics.tokenizer.tokenizer.Tokenizer`), trained on the
  training split and cached by :mod:`cs336_basics.data.pipeline`.
- ``gpt2``: tiktoken's GPT-2 encoding, only when its files are already cached locally (no download at run time).

Encoding a file goes through the parallel :func:`~cs336_basics.tokenizer.encode_file.encode_file` for BPE
tokenizers and through a streaming block encoder here for the others; both write ``tokens.bin``
(``uint16``/``uint32``) + ``meta.json``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import regex
from tqdm import tqdm

from cs336_basics.checksums import sha256_text
from cs336_basics.tokenizer.encode_file import encode_file, token_dtype, tokenizer_checksum, write_token_meta
from cs336_basics.tokenizer.tokenizer import Tokenizer

EOT = "<|endoftext|>"


class ByteTokenizer:
    """UTF-8 bytes as ids 0-255, then one id per special token (``<|endoftext|>`` = 256 by default)."""

    def __init__(self, special_tokens: list[str] | None = None) -> None:
        self.special_tokens = list(dict.fromkeys(special_tokens if special_tokens is not None else [EOT]))
        self._special_ids = {s: 256 + i for i, s in enumerate(self.special_tokens)}
        self._split = (
            regex.compile(
                "(" + "|".join(regex.escape(s) for s in sorted(self.special_tokens, key=len, reverse=True)) + ")"
            )
            if self.special_tokens
            else None
        )

    @property
    def vocab_size(self) -> int:
        return 256 + len(self.special_tokens)

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Like :meth:`encode` but returns an ``int64`` array without a Python loop per byte."""
        parts = self._split.split(text) if self._split is not None else [text]
        arrays = []
        for i, part in enumerate(parts):
            if i % 2 == 1:
                arrays.append(np.array([self._special_ids[part]], dtype=np.int64))
            elif part:
                arrays.append(np.frombuffer(part.encode("utf-8"), dtype=np.uint8).astype(np.int64))
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        ids = np.fromiter(ids, dtype=np.int64) if not isinstance(ids, np.ndarray) else ids.astype(np.int64)
        specials = np.flatnonzero(ids >= 256)
        out, start = [], 0
        for pos in [*specials.tolist(), len(ids)]:
            out.append(ids[start:pos].astype(np.uint8).tobytes().decode("utf-8", errors="replace"))
            if pos < len(ids):
                out.append(self.special_tokens[int(ids[pos]) - 256])
            start = pos + 1
        return "".join(out)

    def checksum(self) -> str:
        return sha256_text(json.dumps(["bytes-v1", self.special_tokens]))


class GPT2Tokenizer:
    """tiktoken's ``gpt2`` encoding with ``<|endoftext|>`` (id 50256) allowed as a special token."""

    def __init__(self) -> None:
        import tiktoken

        try:
            self._enc = tiktoken.get_encoding("gpt2")
        except Exception as e:  # tiktoken raises connection errors of several types when offline
            raise FileNotFoundError(
                "tiktoken's GPT-2 files are not available locally and could not be downloaded "
                f"({type(e).__name__}); run `python -c \"import tiktoken; tiktoken.get_encoding('gpt2')\"` once "
                "online, or set TIKTOKEN_CACHE_DIR to a folder that holds them, or use tokenizer='bytes'/'bpe'"
            ) from None
        self.special_tokens = [EOT]

    @property
    def vocab_size(self) -> int:
        return self._enc.n_vocab

    def encode(self, text: str) -> list[int]:
        return self._enc.encode(text, allowed_special={EOT})

    def decode(self, ids: Iterable[int]) -> str:
        return self._enc.decode(list(ids), errors="replace")

    def checksum(self) -> str:
        return sha256_text(f"tiktoken-gpt2-{self._enc.n_vocab}")


def tokenizer_sha256(tokenizer) -> str:
    """A checksum that changes whenever the tokenizer would encode differently."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer_checksum(tokenizer)
    return tokenizer.checksum()


def iter_text_blocks(path: str | os.PathLike, block_chars: int = 1 << 22, separator: str = EOT) -> Iterator[str]:
    """Read ``path`` in blocks of about ``block_chars`` characters, each ending just after a ``separator``
    (or at end of file), so no special token is ever cut in two."""
    carry = ""
    with open(path, encoding="utf-8") as f:
        while chunk := f.read(block_chars):
            text = carry + chunk
            cut = text.rfind(separator)
            if cut < 0:
                carry = text
                continue
            cut += len(separator)
            carry = text[cut:]
            yield text[:cut]
    if carry:
        yield carry


def encode_text_file(
    input_path: str | os.PathLike,
    tokenizer,
    out_dir: str | os.PathLike,
    num_workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Encode a text file into ``out_dir/tokens.bin`` + ``out_dir/meta.json``; returns the metadata.

    Project BPE tokenizers use the parallel :func:`cs336_basics.tokenizer.encode_file.encode_file`; the byte and
    GPT-2 tokenizers stream blocks through their own (already fast) ``encode``.
    """
    if isinstance(tokenizer, Tokenizer):
        return encode_file(input_path, tokenizer, out_dir, num_workers=num_workers, progress=progress)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    tmp = out / "tokens.bin.tmp"
    num_tokens = 0
    total = Path(input_path).stat().st_size
    with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True, desc="encode", disable=not progress) as bar:
        for block in iter_text_blocks(input_path):
            ids = tokenizer.encode_array(block) if hasattr(tokenizer, "encode_array") else tokenizer.encode(block)
            data = np.asarray(ids, dtype=dtype)
            f.write(data.tobytes())
            num_tokens += len(data)
            bar.update(len(block.encode("utf-8")))
    os.replace(tmp, out / "tokens.bin")
    return write_token_meta(out, dtype, num_tokens, tokenizer, input_path, total, tokenizer_sha256(tokenizer))
