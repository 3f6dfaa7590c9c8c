"""Value checks for experiment configs: ranges and settings that make no sense together, found before any writing.

Types are already checked when :mod:`assignment_experiments.config` builds the dataclasses; :func:`validate` checks
what a type cannot say (positive sizes, ``d_model`` divisible by ``num_heads``, hybrid patterns, a vocabulary too
large for the token dtype, missing data files, ...). Each problem raises :class:`ConfigError` with one line naming
the key and the fix.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from assignment_experiments.errors import ConfigError
from cs336_basics.models.language_model import LanguageModel

if TYPE_CHECKING:  # annotations only: config imports this module, never the other way at run time
    from assignment_experiments.config import ExperimentConfig, ModelConfig


class UnusedSettingWarning(UserWarning):
    """A config setting that the chosen model never reads."""


TOKEN_DTYPE_LIMITS = {"uint16": 2**16, "int32": 2**31, "int64": 2**63}


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(f"config error: {message}")


def validate(config: ExperimentConfig) -> None:
    """Check value ranges and cross-field consistency; raise ConfigError with a one-line fix."""
    m, d, o, t, lg = config.model, config.data, config.optim, config.train, config.logging
    for key, value in [
        ("model.context_length", m.context_length),
        ("model.d_model", m.d_model),
        ("train.max_steps", t.max_steps),
        ("train.batch_size", t.batch_size),
        ("train.grad_accum_steps", t.grad_accum_steps),
        ("train.eval_every", t.eval_every),
        ("train.eval_batches", t.eval_batches),
        ("train.keep_checkpoints", t.keep_checkpoints),
        ("logging.log_every", lg.log_every),
        ("data.num_bytes", d.num_bytes),
    ]:
        _require(value > 0, f"{key}={value} must be positive; choose a value >= 1")
    for key, value in [
        ("model.vocab_size", m.vocab_size),
        ("model.ffn.d_ff", m.ffn.d_ff if m.ffn is not None else None),
        ("model.target_params", m.target_params),
        ("data.final_eval_max_tokens", d.final_eval_max_tokens),
    ]:
        _require(value is None or value > 0, f"{key}={value} must be positive; choose a value >= 1 or null")
    for key, value in [
        ("train.checkpoint_every", t.checkpoint_every),
        ("train.early_stopping_patience", t.early_stopping_patience),
        ("train.average_last_k", t.average_last_k),
        ("train.num_threads", t.num_threads),
        ("optim.warmup_steps", o.warmup_steps),
        ("optim.decay_steps", o.decay_steps),
        ("optim.grad_clip", o.grad_clip),
        ("optim.weight_decay", o.weight_decay),
    ]:
        _require(value >= 0, f"{key}={value} must not be negative; use 0 to switch it off")
    _require(
        t.target_accuracy is None or 0 < t.target_accuracy <= 1,
        f"train.target_accuracy={t.target_accuracy} must lie in (0, 1]; e.g. 0.99, or null to train all max_steps",
    )
    _require(
        t.target_accuracy is None or d.source == "synthetic",
        f"train.target_accuracy needs a task with answers (data.source=synthetic), not data.source={d.source!r}; "
        "remove it or use early_stopping_patience",
    )
    _require(o.lr > 0, f"optim.lr={o.lr} must be positive; try 1e-3")
    _require(0 <= o.min_lr <= o.lr, f"optim.min_lr={o.min_lr} must lie in [0, optim.lr={o.lr}]; lower min_lr")
    _require(o.eps > 0, f"optim.eps={o.eps} must be positive; try 1e-8")
    _require(
        len(o.betas) == 2 and all(0 <= b < 1 for b in o.betas),
        f"optim.betas={o.betas} must be two numbers in [0, 1); e.g. [0.9, 0.95]",
    )
    _require(
        o.warmup_steps + o.decay_steps <= t.max_steps,
        f"optim.warmup_steps + optim.decay_steps = {o.warmup_steps + o.decay_steps} exceeds train.max_steps="
        f"{t.max_steps}; shorten warmup/decay or train longer",
    )
    _require(
        o.schedule != "wsd" or o.decay_steps > 0,
        "optim.decay_steps=0 with optim.schedule='wsd'; set decay_steps (e.g. 20% of max_steps)",
    )
    _require(
        d.val_fraction is None or 0 < d.val_fraction < 1,
        f"data.val_fraction={d.val_fraction} must lie in (0, 1) (or null: the corpus's own validation file)",
    )
    _require(
        t.average_last_k <= t.keep_checkpoints,
        f"train.average_last_k={t.average_last_k} exceeds train.keep_checkpoints={t.keep_checkpoints}; "
        "keep at least as many checkpoints as you average",
    )
    _require(
        t.average_last_k == 0 or t.checkpoint_every > 0,
        "train.average_last_k needs checkpoints; set train.checkpoint_every > 0",
    )
    _require(0 < t.sample_top_p <= 1, f"train.sample_top_p={t.sample_top_p} must lie in (0, 1]; e.g. 0.95")
    _require(t.sample_temperature >= 0, f"train.sample_temperature={t.sample_temperature} must not be negative")
    _validate_model(m, placeholder_vocab=d.tokenizer_vocab_size or 256)
    _validate_data(config)


# The model sections each block letter reads; a section the plan never reads must stay at its defaults.
SECTIONS_READ = {"A": {"attention"}, "M": {"ssm"}, "H": {"attention", "ssm", "hymba"}}


def _branch_not_built(m: ModelConfig, letter: str) -> set[str]:
    """The section an ``H`` layer leaves unread when ``hymba.branches`` builds only one branch (a learned position
    table is the shell's, added to the input of an SSM-only Hymba too, so ``attention.positions`` stays read)."""
    if letter != "H" or (m.hymba.branches == "ssm" and m.attention.positions == "learned"):
        return set()
    return {"ssm": {"attention"}, "attention": {"ssm"}}.get(m.hymba.branches, set())


def _validate_model(m: ModelConfig, placeholder_vocab: int) -> None:
    """Check the model section completely before any data is prepared: build it on the meta device (no memory)."""
    if m.architecture == "hybrid":
        _require(bool(m.pattern), "model.pattern is required for architecture 'hybrid'; e.g. \"AMAM\"")
    elif m.pattern is not None:
        raise ConfigError(
            f"config error: model.pattern is only used by architecture 'hybrid', not {m.architecture!r}; remove it"
        )
    else:
        _require(m.num_layers > 0, f"model.num_layers={m.num_layers} must be positive; choose a value >= 1")
    heads = m.attention.num_heads
    if any(letter in "AH" for letter in m.plan):
        _require(
            heads > 0 and m.d_model % heads == 0,
            f"model.d_model={m.d_model} is not divisible by model.attention.num_heads={heads}; "
            "choose d_model a multiple of num_heads",
        )
        _require(
            m.attention.positions != "rope" or (m.d_model // heads) % 2 == 0,
            f"model.d_model / model.attention.num_heads = {m.d_model // heads} is odd, but RoPE needs an even head "
            "dimension; change d_model or num_heads",
        )
    if set(m.plan) <= set(SECTIONS_READ):  # a suite may switch the architecture of a base config: warn, go on
        read = set().union(*(SECTIONS_READ[letter] - _branch_not_built(m, letter) for letter in m.plan))
        defaults = type(m)()
        one_branch = "H" in m.plan and m.hymba.branches != "both"
        branches_note = f" and hymba.branches={m.hymba.branches!r}" if one_branch else ""
        for section in ("attention", "ssm", "hymba"):
            if section not in read and getattr(m, section) != getattr(defaults, section):
                warnings.warn(
                    f"model.{section} is set, but a {m.architecture} with plan {m.plan!r}"
                    f"{branches_note} has no layer that reads it; it has no effect",
                    UnusedSettingWarning,
                    stacklevel=2,
                )
    try:
        spec = m.spec(m.vocab_size or placeholder_vocab)
        with torch.device("meta"):
            LanguageModel(spec)
    except (ValueError, TypeError) as error:
        message = str(error).splitlines()[0]
        raise ConfigError(
            f"config error: model: {message.replace('layer plan', 'model.pattern (layer plan)')}"
        ) from None


def _validate_data(config: ExperimentConfig) -> None:
    d, m = config.data, config.model
    if d.source == "tokens":
        limit = TOKEN_DTYPE_LIMITS[d.token_dtype]
        _require(
            m.vocab_size is None or m.vocab_size <= limit,
            f"model.vocab_size={m.vocab_size} is too large for data.token_dtype={d.token_dtype!r} (max {limit}); "
            "use token_dtype 'int32' or a smaller vocabulary",
        )
    if d.tokenizer == "bpe" and d.source not in ("tokens", "synthetic"):
        _require(
            d.tokenizer_vocab_size is None or d.tokenizer_vocab_size >= 257,
            f"data.tokenizer_vocab_size={d.tokenizer_vocab_size} must be >= 257 (256 bytes + <|endoftext|>)",
        )
    _require(
        d.source != "stories" or d.val_fraction is not None,
        "data.val_fraction=null needs a corpus with its own validation file; use e.g. 0.05 for generated stories",
    )
    if d.source == "synthetic":
        _require(d.task is not None, "data.task is required when data.source='synthetic'; e.g. \"mqar\"")
    elif d.task is not None:
        raise ConfigError(f"config error: data.task is only used with data.source='synthetic', not {d.source!r}")
    if d.stride is not None:
        _require(d.window_mode == "sequential", "data.stride is only used with data.window_mode='sequential'")
        _require(
            (isinstance(d.stride, int) and d.stride >= 1) or (isinstance(d.stride, float) and 0 < d.stride <= 1),
            f"data.stride={d.stride} must be a token count >= 1 or a fraction of the context in (0, 1]; e.g. 0.5",
        )
    _require(
        d.source != "synthetic" or (d.window_mode == "random" and d.eval_windows == "random"),
        "data.window_mode and data.eval_windows apply to token streams, not data.source='synthetic'; remove them",
    )
    if d.source in ("text", "jsonl", "tokens"):
        _require(d.path is not None, f"data.path is required when data.source={d.source!r}; point it at your file")
    _require(
        d.source != "cosmopedia" or d.path is not None or d.hf_revision is not None,
        "data.source='cosmopedia' reads a local .jsonl shard: set data.path=... (or data.hf_revision=<commit> to "
        "stream it with the `datasets` package)",
    )
    _require(d.val_path is None or d.source == "tokens", "data.val_path is only used with data.source='tokens'")
    for key, path in [("data.path", d.path), ("data.val_path", d.val_path)]:
        _require(
            path is None or Path(path).exists(),
            f"{key}={path} does not exist; create it (download / encode_file) or fix the path",
        )
