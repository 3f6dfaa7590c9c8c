"""Encode a text file into a token array on disk: ``tokens.bin`` (raw ``uint16``/``uint32``) plus ``meta.json``.

The file is cut into chunks at special tokens (or safe whitespace positions, see :mod:`.pretokenize`), so chunks
encode independently and the concatenation of their ids equals ``tokenizer.encode(whole_text)``. Chunks are
encoded in worker processes (forked, so the tokenizer is shared copy-on-write) and written in order; memory stays
bounded by a few chunks. ``meta.json`` records the vocab size, dtype, token count, special-token ids and SHA-256
checksums of the tokenizer (of its files when loaded with ``from_files``, and of its canonical vocab + merges).

CLI: ``python -m cs336_basics.tokenizer.encode_file --vocab V --merges M --input FILE --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from itertools import pairwise
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cs336_basics.checksums import sha256_file, sha256_text
from cs336_basics.fs_checks import check_writable_dir, os_error_line
from cs336_basics.tokenizer.io import escape_token
from cs336_basics.tokenizer.pretokenize import find_chunk_boundaries, read_chunk_text
from cs336_basics.tokenizer.tokenizer import Tokenizer

DEFAULT_CHUNK_BYTES = 4 << 20
_WORKER_TOKENIZER: Tokenizer | None = None  # set before forking the pool; read by workers


def token_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits in 16 bits, else ``uint32``."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def tokenizer_checksum(tokenizer: Tokenizer) -> str:
    """SHA-256 of a canonical text form of the tokenizer's vocab, merges and special tokens."""
    lines = [f"{i} {escape_token(tokenizer.vocab[i])}\n" for i in sorted(tokenizer.vocab)]
    lines += [f"{escape_token(a)} {escape_token(b)}\n" for a, b in tokenizer.merges]
    return sha256_text("".join(lines) + json.dumps(tokenizer.special_tokens))


def _encode_chunk(args: tuple[str, int, int, str]) -> bytes:
    path, start, end, dtype = args
    assert _WORKER_TOKENIZER is not None
    return _WORKER_TOKENIZER.encode_array(read_chunk_text(path, start, end)).astype(dtype, copy=False).tobytes()


def encode_file(
    input_path: str | os.PathLike,
    tokenizer: Tokenizer,
    out_dir: str | os.PathLike,
    num_workers: int | None = None,
    progress: bool = True,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> dict:
    """Encode ``input_path`` into ``out_dir/tokens.bin`` + ``out_dir/meta.json``; returns the metadata dict."""
    global _WORKER_TOKENIZER
    path = Path(input_path)
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist; pass a UTF-8 text file")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes={chunk_bytes} must be positive")
    out = Path(out_dir)
    check_writable_dir(out, "output directory")  # fail before the encoding, not after it
    out.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(tokenizer.vocab_size)
    bounds = find_chunk_boundaries(path, chunk_bytes, tokenizer.special_tokens)
    tasks = [(str(path), s, e, dtype.str) for s, e in pairwise(bounds)]
    workers = max(1, min(num_workers or os.cpu_count() or 1, len(tasks)))

    start_time = time.perf_counter()
    tmp = out / "tokens.bin.tmp"
    num_tokens = 0
    bar = tqdm(total=bounds[-1], unit="B", unit_scale=True, desc="encode", disable=not progress)
    _WORKER_TOKENIZER = tokenizer
    try:
        with open(tmp, "wb") as f:
            if workers == 1:
                results = map(_encode_chunk, tasks)
                for task, data in zip(tasks, results, strict=True):
                    f.write(data)
                    num_tokens += len(data) // dtype.itemsize
                    bar.update(task[2] - task[1])
            else:
                with mp.get_context("fork").Pool(workers) as pool:
                    for task, data in zip(tasks, pool.imap(_encode_chunk, tasks), strict=True):
                        f.write(data)
                        num_tokens += len(data) // dtype.itemsize
                        bar.update(task[2] - task[1])
        os.replace(tmp, out / "tokens.bin")
    finally:
        _WORKER_TOKENIZER = None
        bar.close()
        tmp.unlink(missing_ok=True)
    elapsed = time.perf_counter() - start_time

    extra: dict = {"encode_seconds": round(elapsed, 3)}
    if tokenizer.source_files is not None:
        extra["vocab_file"], extra["merges_file"] = tokenizer.source_files
        extra["vocab_sha256"], extra["merges_sha256"] = (sha256_file(p) for p in tokenizer.source_files)
    return write_token_meta(out, dtype, num_tokens, tokenizer, path, bounds[-1], tokenizer_checksum(tokenizer), extra)


def write_token_meta(
    out: Path,
    dtype: np.dtype,
    num_tokens: int,
    tokenizer,
    input_path: str | os.PathLike,
    input_bytes: int,
    tokenizer_sha256: str,
    extra: dict | None = None,
) -> dict:
    """Write ``out/meta.json`` describing ``out/tokens.bin`` (the one format every token array here shares); return it.

    ``tokenizer`` is any tokenizer with ``vocab_size``, ``special_tokens`` and ``encode``; ``extra`` adds fields.
    """
    meta = {
        "tokens_file": "tokens.bin",
        "dtype": dtype.name,
        "num_tokens": num_tokens,
        "vocab_size": tokenizer.vocab_size,
        "special_tokens": {s: tokenizer.encode(s)[0] for s in tokenizer.special_tokens},
        "input_file": str(input_path),
        "input_bytes": input_bytes,
        "tokenizer_sha256": tokenizer_sha256,
        **(extra or {}),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cs336_basics.tokenizer.encode_file",
        description="Encode a UTF-8 text file into tokens.bin + meta.json.",
    )
    parser.add_argument("--vocab", required=True, help="vocab.json written by cs336_basics.tokenizer.train")
    parser.add_argument("--merges", required=True, help="merges.txt written by cs336_basics.tokenizer.train")
    parser.add_argument("--input", required=True, help="text file to encode (UTF-8)")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--special-token", action="append", default=[], help="special token (repeatable)")
    parser.add_argument("--num-workers", type=int, default=None, help="encoding processes (default: all cores)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    try:
        tokenizer = Tokenizer.from_files(args.vocab, args.merges, args.special_token)
        meta = encode_file(args.input, tokenizer, args.out, args.num_workers, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:  # includes non-UTF-8 input and an unwritable --out
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    except OSError as e:
        code, line = os_error_line(e)
        print(line, file=sys.stderr)
        return code
    rate = meta["input_bytes"] / max(meta["encode_seconds"], 1e-9) / 1e6
    seconds = meta["encode_seconds"]
    print(f"wrote {meta['num_tokens']} tokens ({meta['dtype']}) to {args.out} in {seconds} s ({rate:.1f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
