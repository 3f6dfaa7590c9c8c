"""Typed experiment configs: JSON in, validated dataclasses out.

An experiment config is a JSON object with the sections ``model``, ``data``, ``optim``, ``train`` and ``logging``,
a free-text ``description`` (the hypothesis) and an optional ``baseline`` (the name of the run it is compared to).

- Every key is typed by a dataclass field; unknown keys and wrong types are rejected with the key's dotted path.
- ``--set section.key=value`` overrides are parsed as JSON when possible (``3e-4``, ``true``, ``[0.9, 0.95]``) and
  otherwise taken as strings, then type-checked like the file.
- :func:`validate` checks the values that make no sense together (``d_model`` not divisible by ``num_heads``, bad
  hybrid patterns, a vocabulary too large for the token dtype, missing data files) *before* anything is written.
Each problem raises :class:`ConfigError` with one line that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

TOKEN_DTYPE_LIMITS = {"uint16": 2**16, "int32": 2**31, "int64": 2**63}


class ConfigError(ValueError):
    """A config problem the user can fix; the message is one line naming the key and the fix."""


@dataclass
class ModelConfig:
    """Architecture and sizes. ``None`` means "the model class's default" (or, for vocab_size, "from the data")."""

    architecture: Literal["transformer", "mamba", "hybrid", "hymba"] = "transformer"
    vocab_size: int | None = None
    context_length: int = 128
    d_model: int = 128
    num_layers: int | None = 2
    num_heads: int | None = 4
    d_ff: int | None = None
    rope_theta: float | None = None
    norm: Literal["pre", "post", "none"] | None = None
    positions: Literal["rope", "learned", "none"] | None = None
    ffn: Literal["swiglu", "silu"] | None = None
    tie_embeddings: bool | None = None
    attn_backend: Literal["naive", "torch_sdpa"] | None = None
    d_state: int | None = None
    d_conv: int | None = None
    expand: int | None = None
    pattern: str | None = None
    scan_backend: Literal["auto", "reference", "chunked", "triton"] | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    """Where tokens come from: a corpus via ``prepare_corpus``, pre-encoded tokens, or a synthetic task.

    Corpus sources (``stories`` is generated offline; the others read local files under ``data_dir`` or ``path``)
    take the ``tokenizer``/``tokenizer_vocab_size``/``num_bytes``/``val_fraction`` settings; ``tokens`` reads a
    ``.npy`` or raw ``.bin`` of ``token_dtype`` ids; ``synthetic`` samples ``task`` with ``task_options``.

    Token streams train on ``window_mode`` windows: ``random`` starts, or ``sequential`` ones ``stride`` apart
    (an int is tokens, a float in (0, 1] a fraction of the context; null: the context, no overlap), reshuffled every
    epoch with ``shuffle_windows``. Periodic evaluation uses seeded random windows or, with ``eval_windows="fixed"``,
    the first non-overlapping ones.
    """

    source: Literal["stories", "tinystories", "owt", "wikitext103", "pg19", "jsonl", "text", "tokens", "synthetic"] = (
        "stories"
    )
    tokenizer: Literal["bytes", "bpe", "gpt2"] = "bpe"
    tokenizer_vocab_size: int | None = 512
    num_bytes: int = 2_000_000
    bpe_train_bytes: int | None = 8_000_000
    val_fraction: float | None = 0.05
    seed: int = 0
    path: str | None = None
    val_path: str | None = None
    data_dir: str | None = None
    text_field: str = "text"
    hf_revision: str | None = None
    cache_dir: str = "data_cache"
    token_dtype: Literal["uint16", "int32", "int64"] = "uint16"
    task: Literal["mqar", "copy", "selective_copy"] | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    final_eval_max_tokens: int | None = None
    window_mode: Literal["random", "sequential"] = "random"
    stride: int | float | None = None
    shuffle_windows: bool = False
    eval_windows: Literal["random", "fixed"] = "random"


@dataclass
class OptimConfig:
    """AdamW and the learning-rate schedule (``wsd`` = warmup-stable-decay)."""

    lr: float = 1e-3
    min_lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    eps: float = 1e-8
    weight_decay: float = 0.1
    schedule: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 50
    decay_steps: int = 0
    decay_shape: Literal["linear", "cosine"] = "linear"
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    """Steps, batches, evaluation, checkpoints and hardware switches."""

    max_steps: int = 500
    batch_size: int = 16
    grad_accum_steps: int = 1
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    seed: int = 0
    early_stopping_patience: int = 0
    average_last_k: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    compile: bool = False
    activation_checkpointing: bool = False
    num_threads: int = 0
    sample_prompts: list[str] = field(default_factory=lambda: ["Once upon a time", "The little dog"])
    sample_max_new_tokens: int = 80
    sample_temperature: float = 0.8
    sample_top_p: float = 0.95


@dataclass
class LoggingConfig:
    """Console, W&B and local metrics."""

    log_every: int = 10
    progress_bar: bool = True
    wandb: Literal["online", "offline", "disabled"] = "disabled"
    wandb_project: str = "cs336-basics"


@dataclass
class ExperimentConfig:
    """A whole experiment: the hypothesis, what it is compared to, and the five sections."""

    description: str = ""
    baseline: str | None = None
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` checked against ``annotation`` (ints are accepted where floats are expected)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin is Literal:
        if value in typing.get_args(annotation):
            return value
        raise ConfigError(f"config error: {key}={value!r} is not allowed; choose one of {_type_name(annotation)}")
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(value, option, key)
            except ConfigError:
                continue
        if any(typing.get_origin(option) is Literal for option in typing.get_args(annotation)):
            raise ConfigError(f"config error: {key}={value!r} is not allowed; choose one of {_type_name(annotation)}")
        raise ConfigError(f"config error: {key}={value!r} has the wrong type; expected {_type_name(annotation)}")
    if annotation is type(None):
        if value is None:
            return None
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        (item_type,) = typing.get_args(annotation)
        if isinstance(value, list):
            return [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ConfigError(f"config error: {key}={value!r} has the wrong type; expected {_type_name(annotation)}")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: {prefix or 'the config'} must be a JSON object, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"config error: unknown key {where}{unknown[0]}; valid keys{' in ' + prefix if prefix else ''}: "
            f"{', '.join(sorted(names))}"
        )
    values = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        annotation = hints[name]
        values[name] = (
            _build(annotation, value, key) if dataclasses.is_dataclass(annotation) else _coerce(value, annotation, key)
        )
    return cls(**values)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"config error: --set {text!r} has no '='; write --set section.key=value")
    key, _, raw = text.partition("=")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to a raw config dict (type checking happens when it is built)."""
    for text in overrides:
        path, value = _parse_override(text)
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config error: --set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return raw


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override, type-check and validate an experiment config."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config error: config file {path} does not exist; pass --config with an existing JSON file")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"config error: {path} is not valid JSON ({error}); fix the file") from error
    return config_from_dict(apply_overrides(raw, overrides or []))


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Type-check and validate a raw config dict."""
    config = _build(ExperimentConfig, raw, "")
    validate(config)
    return config


RESUMABLE_CHANGES = ("train.max_steps", "logging.")  # keys a resumed run may change (length and reporting only)


def _flatten(raw: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        out.update(_flatten(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return out


def resume_conflicts(saved: dict[str, Any], current: ExperimentConfig) -> list[str]:
    """``key: saved -> current`` for every setting that differs from a checkpoint's config, except resumable ones.

    The saved dict is completed with today's defaults first, so keys added since it was written do not count.
    """
    before, after = _flatten(_build(ExperimentConfig, saved, "").to_dict()), _flatten(current.to_dict())
    return [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]


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
        ("model.num_layers", m.num_layers),
        ("model.num_heads", m.num_heads),
        ("model.d_ff", m.d_ff),
        ("model.d_state", m.d_state),
        ("model.d_conv", m.d_conv),
        ("model.expand", m.expand),
        ("model.vocab_size", m.vocab_size),
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
    _validate_model(m)
    _validate_data(config)


def _validate_model(m: ModelConfig) -> None:
    if m.architecture in ("transformer", "hybrid", "hymba"):
        _require(m.num_heads is not None, f"model.num_heads is required for architecture {m.architecture!r}")
        _require(
            m.d_model % m.num_heads == 0,
            f"model.d_model={m.d_model} is not divisible by model.num_heads={m.num_heads}; "
            "choose d_model a multiple of num_heads",
        )
        head_dim = m.d_model // m.num_heads
        _require(
            m.positions == "none" or m.positions == "learned" or head_dim % 2 == 0,
            f"model.d_model / model.num_heads = {head_dim} is odd, but RoPE needs an even head dimension; "
            "change d_model or num_heads",
        )
    if m.architecture == "hybrid":
        from cs336_basics.models.hybrid import validate_pattern

        _require(bool(m.pattern), "model.pattern is required for architecture 'hybrid'; e.g. \"AMAM\"")
        try:
            validate_pattern(m.pattern)
        except ValueError as error:
            raise ConfigError(f"config error: model.{error}") from None
    elif m.pattern is not None:
        raise ConfigError(
            f"config error: model.pattern is only used by architecture 'hybrid', not {m.architecture!r}; remove it"
        )


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
    _require(d.val_path is None or d.source == "tokens", "data.val_path is only used with data.source='tokens'")
    for key, path in [("data.path", d.path), ("data.val_path", d.val_path)]:
        _require(
            path is None or Path(path).exists(),
            f"{key}={path} does not exist; create it (download / encode_file) or fix the path",
        )
