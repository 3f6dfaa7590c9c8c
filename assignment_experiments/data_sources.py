"""Turn a ``data`` config section into a batch source, a vocabulary size and (for text) a tokenizer.

- ``stories`` (generated offline), ``tinystories``, ``owt``, ``wikitext103``, ``pg19``, ``jsonl``, ``text``: split,
  tokenized (bytes, a BPE trained here, or GPT-2) and cached under ``data.cache_dir`` by
  ``cs336_basics.data.pipeline.prepare_corpus``.
- ``tokens``: pre-encoded token ids: a ``.npy`` file, or a raw ``.bin`` of ``data.token_dtype`` (with an optional
  ``meta.json`` beside it giving ``vocab_size``); the last ``data.val_fraction`` is held out unless ``data.val_path``
  is given. No tokenizer, so no text samples.
- ``synthetic``: an algorithmic task (``mqar``, ``copy``, ``selective_copy``) from ``cs336_basics.data.synthetic``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from assignment_experiments.config import ConfigError, DataConfig
from cs336_basics.training.batches import BatchSource, TaskBatches, TokenBatches


@dataclass
class PreparedData:
    """What the runner needs from the data: batches, the vocabulary size, and for text a tokenizer."""

    batches: BatchSource
    vocab_size: int
    tokenizer: Any = None
    eos_id: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _load_tokens(path: Path, dtype: str) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    return np.memmap(path, dtype=np.dtype(dtype), mode="r")


def _meta_beside(path: Path) -> dict[str, Any]:
    """The ``meta.json`` next to a token file, if it describes that file (``tokens_file`` names it or is absent)."""
    meta_path = path.parent / "meta.json"
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        raise ConfigError(f"config error: {meta_path} is not valid JSON; fix or remove it") from None
    return meta if meta.get("tokens_file", path.name) == path.name else {}


def checked_tokens(path: Path, key: str, dtype: str) -> np.ndarray:
    """Open a token file after checking its size against its ``meta.json`` (count x dtype); one-line ConfigErrors."""
    if not path.is_file():
        raise ConfigError(f"config error: {key}={str(path)!r} does not exist; pass a .npy or .bin token file")
    meta = _meta_beside(path)
    dtype = meta.get("dtype", dtype)
    itemsize = np.dtype(dtype).itemsize
    size = path.stat().st_size
    if path.suffix != ".npy" and size % itemsize:
        raise ConfigError(
            f"config error: {key}={str(path)!r} has {size} bytes, not a whole number of {dtype} tokens; the file is "
            "truncated or data.token_dtype is wrong"
        )
    try:
        tokens = _load_tokens(path, dtype)
    except ValueError as error:  # a torn .npy header, or an empty .bin
        raise ConfigError(f"config error: {key}={str(path)!r} cannot be read ({error}); re-encode it") from None
    expected = meta.get("num_tokens")
    if isinstance(expected, int) and len(tokens) != expected:
        raise ConfigError(
            f"config error: {key}={str(path)!r} holds {len(tokens)} {dtype} tokens but its meta.json records "
            f"{expected}; the file is truncated or was replaced: re-encode it"
        )
    if len(tokens) == 0:
        raise ConfigError(f"config error: {key}={str(path)!r} holds no tokens; re-encode it")
    return tokens


def _largest_id(tokens: np.ndarray, block: int = 1 << 24) -> tuple[int, int]:
    """``(largest id, its first position)`` scanned in blocks, so a multi-GB memmap is never copied whole."""
    best, where = -1, 0
    for start in range(0, len(tokens), block):
        part = np.asarray(tokens[start : start + block])
        value = int(part.max())
        if value > best:
            best, where = value, start + int(np.argmax(part))
    return best, where


def token_batches(
    data: DataConfig,
    train: np.ndarray,
    val: np.ndarray,
    context_length: int,
    device: Any,
    rank: int,
    world: int,
    seed: int,
) -> TokenBatches:
    """Token batches with the configured window mode (a fractional ``data.stride`` is a share of the context)."""
    stride = data.stride
    if isinstance(stride, float):
        stride = max(1, round(stride * context_length))
    return TokenBatches(
        train, val, context_length, device, rank, world, window_mode=data.window_mode, stride=stride,
        shuffle=data.shuffle_windows, seed=seed, fixed_eval=data.eval_windows == "fixed",
    )  # fmt: skip


def _token_source(data: DataConfig, context_length: int, device: Any, rank: int, world: int, seed: int) -> PreparedData:
    path = Path(data.path)
    meta = _meta_beside(path)
    tokens = checked_tokens(path, "data.path", data.token_dtype)
    if data.val_path is not None:
        train, val = tokens, checked_tokens(Path(data.val_path), "data.val_path", meta.get("dtype", data.token_dtype))
    else:
        split = int(len(tokens) * (1 - data.val_fraction))
        train, val = tokens[:split], tokens[split:]
    (train_max, train_at), (val_max, val_at) = _largest_id(train), _largest_id(val)
    vocab_size = int(meta.get("vocab_size", max(train_max, val_max) + 1))
    for key, largest, at in (("data.path", train_max, train_at), ("data.val_path", val_max, val_at)):
        if largest >= vocab_size:
            where = key if key == "data.path" or data.val_path is not None else "data.path (validation part)"
            raise ConfigError(
                f"config error: {where} holds token id {largest} (at index {at}) but the vocabulary has "
                f"{vocab_size} ids (meta.json vocab_size); the tokens and meta.json do not belong together: "
                "re-encode the file or fix meta.json"
            )
    batches = token_batches(data, train, val, context_length, device, rank, world, seed)
    return PreparedData(batches, vocab_size, meta=meta)


def _corpus_source(
    data: DataConfig, context_length: int, device: Any, rank: int, world: int, seed: int, progress: bool = False
) -> PreparedData:
    import time

    from cs336_basics.data.pipeline import prepare_corpus

    if progress:
        vocab = f" (vocab {data.tokenizer_vocab_size or 1024})" if data.tokenizer == "bpe" else ""
        print(
            f"data: {data.source}, {data.tokenizer} tokenizer{vocab}, cache {data.cache_dir}/ (a first use splits, "
            "trains the tokenizer and encodes, with progress bars; later runs reuse the cache)",
            flush=True,
        )
    started = time.perf_counter()

    kwargs: dict[str, Any] = {
        "source": data.source,
        "tokenizer": data.tokenizer,
        "cache_dir": data.cache_dir,
        "vocab_size": data.tokenizer_vocab_size if data.tokenizer == "bpe" else None,
        "num_bytes": data.num_bytes,
        "val_fraction": data.val_fraction,
        "seed": data.seed,
        "path": data.path,
        "text_field": data.text_field,
        "hf_revision": data.hf_revision,
        "bpe_train_bytes": data.bpe_train_bytes,
        "progress": progress,
    }
    if data.data_dir is not None:
        kwargs["data_dir"] = data.data_dir
    corpus = prepare_corpus(**kwargs)
    if progress:
        print(
            f"data ready in {time.perf_counter() - started:.1f} s: {len(corpus.train):,} train / {len(corpus.val):,} "
            f"validation tokens, vocabulary {corpus.vocab_size:,}",
            flush=True,
        )
    batches = token_batches(data, corpus.train, corpus.val, context_length, device, rank, world, seed)
    return PreparedData(batches, corpus.vocab_size, corpus.tokenizer, corpus.eos_id, dict(corpus.meta))


def prepare_data(
    data: DataConfig,
    context_length: int,
    device: Any,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> PreparedData:
    """Build the data for a run; bad settings raise ConfigError naming the key.

    ``progress`` prints what is being prepared and shows progress bars for the slow first-use stages (splitting,
    BPE training, encoding), which otherwise run silently for minutes on a large corpus.
    """
    if data.source == "tokens":
        return _token_source(data, context_length, device, rank, world_size, seed)
    if data.source == "synthetic":
        from cs336_basics.data.synthetic import make_task

        try:
            task = make_task(data.task, **data.task_options)
        except (TypeError, ValueError) as error:
            raise ConfigError(f"config error: data.task_options for task {data.task!r}: {error}") from None
        batches = TaskBatches(task, device, rank, world_size, seed=seed)
        return PreparedData(batches, task.vocab_size, meta={"task": data.task, **data.task_options})
    return _corpus_source(data, context_length, device, rank, world_size, seed, progress)
