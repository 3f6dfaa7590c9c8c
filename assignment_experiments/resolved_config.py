"""The fully resolved config: every default written out, so a run's ``config.json`` says what the run used.

``run_experiment --print-config`` prints it, and the runner writes it into ``runs/<name>/config.json`` and its
checkpoints. Resolution is generic:

1. every section is its dataclass, so a key absent from the file takes the dataclass default (all sections);
2. the model section is typed, so it has no "the model's own default" nulls; the one architecture-dependent default,
   ``model.ffn`` (none for Mamba), is filled when the config is loaded;
3. values the pipeline derives: ``model.vocab_size`` from the data (once it is prepared; ``null`` before),
   ``data.tokenizer_vocab_size`` for a BPE tokenizer (1024 when ``null``), ``data.data_dir`` (``data``) and a
   fractional ``data.stride`` turned into tokens.

Resolving twice changes nothing, and a resolved config loads and validates like any config file.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from assignment_experiments.config import ExperimentConfig, config_from_dict

DEFAULT_BPE_VOCAB = 1024  # cs336_basics.data.pipeline trains this size when data.tokenizer_vocab_size is null
DEFAULT_DATA_DIR = "data"  # cs336_basics.data.corpora.DEFAULT_DATA_DIR
CORPUS_SOURCES = ("stories", "tinystories", "owt", "wikitext103", "pg19", "cosmopedia", "jsonl", "text")


def resolve_config(config: ExperimentConfig, vocab_size: int | None = None) -> ExperimentConfig:
    """A copy of ``config`` with every default filled in (see the module docstring); ``config`` is unchanged."""
    resolved = copy.deepcopy(config)
    m, d = resolved.model, resolved.data
    if m.vocab_size is None and vocab_size is not None:
        m.vocab_size = int(vocab_size)
    if d.source in CORPUS_SOURCES:
        if d.tokenizer == "bpe" and d.tokenizer_vocab_size is None:
            d.tokenizer_vocab_size = DEFAULT_BPE_VOCAB
        if d.data_dir is None:
            d.data_dir = DEFAULT_DATA_DIR
    if isinstance(d.stride, float):
        d.stride = max(1, round(d.stride * m.context_length))
    return resolved


def saved_config(saved_json: str, vocab_size: int | None = None) -> ExperimentConfig:
    """A checkpoint's stored config (JSON), loaded like a config file and resolved.

    Checkpoints written before configs were resolved hold nulls for defaults; resolving them the same way as the
    current config means a filled-in default never counts as a change on ``--resume``.
    """
    return resolve_config(config_from_dict(json.loads(saved_json)), vocab_size)


def resolve_saved_config(saved_json: str, vocab_size: int | None = None) -> dict[str, Any]:
    """:func:`saved_config` as a dict (what :func:`~assignment_experiments.config.resume_conflicts` compares)."""
    return saved_config(saved_json, vocab_size).to_dict()
