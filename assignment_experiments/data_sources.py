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
    meta_path = path.parent / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    tokens = _load_tokens(path, meta.get("dtype", data.token_dtype))
    if data.val_path is not None:
        train, val = tokens, _load_tokens(Path(data.val_path), meta.get("dtype", data.token_dtype))
    else:
        split = int(len(tokens) * (1 - data.val_fraction))
        train, val = tokens[:split], tokens[split:]
    vocab_size = int(meta.get("vocab_size", int(max(train.max(), val.max())) + 1))
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
