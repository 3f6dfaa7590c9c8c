"""Prepare a corpus once: documents -> train/validation split -> tokenizer -> cached token arrays.

``prepare_corpus(...)`` returns a :class:`PreparedCorpus` whose ``train``/``val`` are read-only memmaps, so memory
never scales with the corpus. Three cache entries (see :mod:`cs336_basics.data.cache`), each keyed by everything it
depends on, make a second call start instantly and a changed input rebuild:

1. ``split-<key>/``: ``train.txt`` and ``val.txt``. The split is by document, *before* flattening, so no document is
   in both: a document goes to validation when a seeded hash of its text falls below ``val_fraction`` (identical
   documents therefore land on the same side). ``val_fraction=None`` uses the corpus's own validation file instead.
   Key: source name and settings plus the SHA-256 of every input file (or, for generated stories, their size,
   seed and a fingerprint of the grammar).
2. ``bpe-<key>/``: ``vocab.json`` + ``merges.txt`` trained on (the first ``bpe_train_bytes`` of) ``train.txt``.
3. ``tokens-<key>/``: ``train/tokens.bin`` and ``val/tokens.bin`` (``uint16``/``uint32``) + ``meta.json``; key:
   the split entry's file checksums and the tokenizer's checksum.

Token arrays are verified (sizes and SHA-256; ``verify_checksums=False`` checks sizes only, for multi-GB arrays)
before reuse, and the split files' checksums are re-checked before a tokenizer is trained on them or they are
encoded; a damaged entry is rebuilt (with a notice), so a corrupted text never trains a tokenizer cached under the
clean text's key. Leftovers of builds killed half-way (``*.building-*``) are removed at the next start.
Input files are hashed once and memoised by size and modification time (``cache_dir/fingerprints.json``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cs336_basics.checksums import sha256_text
from cs336_basics.data import corpora
from cs336_basics.data.cache import (
    build_entry,
    cache_key,
    describe_files,
    fingerprint,
    remove_stale_builds,
    verify_entry,
    write_meta,
)
from cs336_basics.data.text_generators.stories import EOT, generate_stories, iter_story_bytes
from cs336_basics.tokenizer.bpe_train import VocabShortfallWarning, shortfall_message, train_bpe
from cs336_basics.tokenizer.io import save_tokenizer_files
from cs336_basics.tokenizer.kinds import ByteTokenizer, GPT2Tokenizer, encode_text_file, tokenizer_sha256
from cs336_basics.tokenizer.tokenizer import Tokenizer

SOURCES = ("stories", "tinystories", "owt", "wikitext103", "pg19", "cosmopedia", "jsonl", "text")
TOKENIZERS = ("bytes", "bpe", "gpt2")


@dataclass
class PreparedCorpus:
    """Token arrays ready for training; ``meta`` records how they were made (keys, checksums, sizes)."""

    train: np.ndarray  # (N_train,) memmap
    val: np.ndarray  # (N_val,) memmap
    vocab_size: int
    tokenizer: Any  # has encode(str) -> list[int] and decode(ids) -> str
    eos_id: int
    meta: dict[str, Any]
    directory: Path


def in_validation(doc: str, seed: int, val_fraction: float) -> bool:
    """Deterministic document-level split: a seeded 64-bit hash of the text compared with ``val_fraction``."""
    digest = hashlib.blake2b(doc.encode("utf-8"), digest_size=8, key=seed.to_bytes(8, "little")).digest()
    return int.from_bytes(digest, "little") < val_fraction * 2**64


def _story_documents(num_bytes: int, seed: int) -> Iterator[str]:
    for block in iter_story_bytes(num_bytes, seed):
        yield from block.decode("utf-8").split(EOT)[:-1]


@contextlib.contextmanager
def _utf8_required(source: str, path, data_dir) -> Iterator[None]:
    """Turn a decoding error deep in a document reader into one line naming the input and the fix."""
    try:
        yield
    except UnicodeDecodeError as error:
        where = path if path is not None else f"the {source} files under {data_dir}"
        raise ValueError(
            f"{where} is not UTF-8 text ({error.reason}, byte 0x{error.object[error.start]:02x}); convert it, "
            "e.g. iconv -f latin1 -t utf-8 IN > OUT"
        ) from None


def _input_files(source: str, path, data_dir, splits: list[str]) -> list[Path]:
    files = []
    for split in splits:
        if source in ("jsonl", "text"):
            if path is None or not Path(path).exists():
                raise FileNotFoundError(
                    f"source {source!r} reads a local file: pass path=... "
                    f"(experiment runner: --set data.path=...) (got {path})"
                )
            location = Path(path)
        else:
            location = corpora.local_path(source, split, path, data_dir)
        files += sorted(p for p in location.rglob("*") if p.is_file()) if location.is_dir() else [location]
    return files


def _build_split(directory: Path, train_docs, val_docs, seed: int, val_fraction: float | None, progress: bool) -> None:
    counts = {"train": 0, "val": 0}
    with (
        open(directory / "train.txt", "w", encoding="utf-8") as ftrain,
        open(directory / "val.txt", "w", encoding="utf-8") as fval,
    ):
        for doc in tqdm(train_docs, desc="split", unit="doc", disable=not progress):
            side = "val" if val_fraction is not None and in_validation(doc, seed, val_fraction) else "train"
            (fval if side == "val" else ftrain).write(doc + EOT)
            counts[side] += 1
        for doc in val_docs:
            fval.write(doc + EOT)
            counts["val"] += 1
    for side, n in counts.items():
        if n == 0:
            raise ValueError(
                f"the {side} split is empty ({counts['train']} train / {counts['val']} val documents); "
                "use more data or a different val_fraction"
            )
    write_meta(directory, {"files": describe_files(directory, ["train.txt", "val.txt"]), "documents": counts})


def _prepare_split(
    source, path, data_dir, num_bytes, seed, val_fraction, text_field, hf_revision, cache_dir, progress, checksums
) -> tuple[Path, dict]:
    if source == "stories":
        identity = {"num_bytes": num_bytes, "grammar": sha256_text(generate_stories(4096))}
        train_docs, val_docs = _story_documents(num_bytes, seed), iter(())
    elif hf_revision is not None:
        identity = {"hf_revision": hf_revision, "text_field": text_field}
        train_docs = corpora.iter_hf_documents(source, "train", hf_revision, text_field)
        val_docs = (
            corpora.iter_hf_documents(source, "valid", hf_revision, text_field) if val_fraction is None else iter(())
        )
    else:
        splits = ["train"] if val_fraction is not None else ["train", "valid"]
        files = _input_files(source, path, data_dir, splits)
        identity = {"files": {str(p): fingerprint(p, cache_dir) for p in files}, "text_field": text_field}
        with _utf8_required(source, path, data_dir):  # the text source peeks at its first megabyte here
            train_docs = corpora.iter_documents(source, "train", path, data_dir, text_field)
            val_docs = (
                corpora.iter_documents(source, "valid", path, data_dir, text_field)
                if val_fraction is None
                else iter(())
            )
    key = cache_key({"stage": "split", "source": source, "seed": seed, "val_fraction": val_fraction, **identity})
    directory = Path(cache_dir) / f"split-{source}-{key}"
    meta, reason = verify_entry(directory, checksums=checksums)
    if meta is None:
        if directory.exists():
            print(f"note: cache entry {directory.name} is damaged ({reason}); rebuilding it", file=sys.stderr)
        with _utf8_required(source, path, data_dir), build_entry(directory) as tmp:
            _build_split(tmp, train_docs, val_docs, seed, val_fraction, progress)
        meta, _ = verify_entry(directory, checksums=False)
    return directory, meta


def _make_tokenizer(
    kind: str, verified_split, split_meta: dict, vocab_size, bpe_train_bytes, cache_dir, workers, progress
):
    if kind == "bytes":
        return ByteTokenizer([EOT])
    if kind == "gpt2":
        return GPT2Tokenizer()
    vocab_size = vocab_size or 1024
    key = cache_key({"stage": "bpe", "train": split_meta["files"]["train.txt"]["sha256"], "vocab_size": vocab_size,
                     "bpe_train_bytes": bpe_train_bytes, "special_tokens": [EOT]})  # fmt: skip
    directory = Path(cache_dir) / f"bpe-{vocab_size}-{key}"
    if verify_entry(directory)[0] is None:
        split_dir, checked = verified_split()  # never train on a split whose text no longer matches its checksum
        if checked["files"]["train.txt"]["sha256"] != split_meta["files"]["train.txt"]["sha256"]:
            raise ValueError(f"the rebuilt split {split_dir} differs from its recorded checksum; delete {cache_dir}")
        with build_entry(directory) as tmp:
            sample = split_dir / "train.txt"
            if bpe_train_bytes is not None and sample.stat().st_size > bpe_train_bytes:
                sample = tmp / "bpe_train.txt"
                with open(split_dir / "train.txt", encoding="utf-8", errors="ignore") as src:
                    text = src.read(bpe_train_bytes)
                sample.write_text(text[: text.rfind(EOT) + len(EOT)] if EOT in text else text, encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", VocabShortfallWarning)  # said below, as one plain line
                vocab, merges = train_bpe(sample, vocab_size, [EOT], num_workers=workers, progress=progress)
            if len(vocab) < vocab_size:
                print(f"note: {shortfall_message(len(vocab), vocab_size)}", file=sys.stderr)
            (tmp / "bpe_train.txt").unlink(missing_ok=True)
            save_tokenizer_files(vocab, merges, tmp)
            write_meta(tmp, {"files": describe_files(tmp, ["vocab.json", "merges.txt"])})
    return Tokenizer.from_files(directory / "vocab.json", directory / "merges.txt", [EOT])


def prepare_corpus(
    source: str = "stories",
    tokenizer: str = "bytes",
    cache_dir: str | os.PathLike = "data_cache",
    vocab_size: int | None = None,
    num_bytes: int = 4_000_000,
    val_fraction: float | None = 0.1,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    data_dir: str | os.PathLike = corpora.DEFAULT_DATA_DIR,
    text_field: str = "text",
    hf_revision: str | None = None,
    bpe_train_bytes: int | None = 8_000_000,
    num_workers: int | None = None,
    progress: bool = False,
    verify_checksums: bool = True,
) -> PreparedCorpus:
    """Split, tokenize and cache a corpus (see the module docstring); returns memmapped token arrays.

    Args:
        source: one of :data:`SOURCES` (``stories`` is generated offline; the others read local files, or the HF hub
            when ``hf_revision`` pins a revision; ``cosmopedia`` reads a local ``.jsonl`` given by ``path``).
        tokenizer: ``bytes`` (vocab 257), ``bpe`` (trained here, ``vocab_size`` default 1024) or ``gpt2`` (tiktoken).
        num_bytes: size of the generated story corpus (``source="stories"`` only).
        val_fraction: fraction of documents held out; ``None`` uses the corpus's own validation file.
        seed: story generator seed and split hash key.
        path: a local file or folder for the source (default: the registry location under ``data_dir``).
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {SOURCES}")
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {tokenizer!r}; choose one of {TOKENIZERS}")
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1) or None (use the corpus's own split), got {val_fraction}")
    if source == "stories" and val_fraction is None:
        raise ValueError("generated stories have no separate validation file; pass a val_fraction such as 0.1")
    split_args = (source, path, data_dir, num_bytes, seed, val_fraction, text_field, hf_revision, cache_dir, progress)
    remove_stale_builds(cache_dir)
    split_dir, split_meta = _prepare_split(*split_args, checksums=False)  # contents re-checked before any use
    tok = _make_tokenizer(
        tokenizer,
        lambda: _prepare_split(*split_args, checksums=True),
        split_meta,
        vocab_size,
        bpe_train_bytes,
        cache_dir,
        num_workers,
        progress,
    )
    tok_sha = tokenizer_sha256(tok)
    split_sums = {name: info["sha256"] for name, info in split_meta["files"].items()}
    key = cache_key({"stage": "tokens", "split": split_sums, "tokenizer": tok_sha})
    directory = Path(cache_dir) / f"tokens-{source}-{tokenizer}-{key}"
    meta, _ = verify_entry(directory, checksums=verify_checksums)
    if meta is None:
        split_dir, split_meta = _prepare_split(*split_args, checksums=True)
        with build_entry(directory) as tmp:
            parts = {}
            for side in ("train", "val"):
                parts[side] = encode_text_file(split_dir / f"{side}.txt", tok, tmp / side, num_workers, progress)
            meta = {
                "files": describe_files(tmp, ["train/tokens.bin", "val/tokens.bin"]),
                "dtype": parts["train"]["dtype"],
                "num_tokens": {side: parts[side]["num_tokens"] for side in parts},
                "vocab_size": tok.vocab_size,
                "eos_id": tok.encode(EOT)[0],
                "source": source,
                "tokenizer": tokenizer,
                "tokenizer_sha256": tok_sha,
                "split": {
                    "directory": str(split_dir),
                    "documents": split_meta["documents"],
                    "val_fraction": val_fraction,
                },
                "seed": seed,
            }
            write_meta(tmp, meta)
    arrays = {
        side: np.memmap(
            directory / side / "tokens.bin", dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"][side],)
        )
        for side in ("train", "val")
    }
    return PreparedCorpus(arrays["train"], arrays["val"], meta["vocab_size"], tok, meta["eos_id"], meta, directory)
