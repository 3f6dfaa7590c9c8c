"""Typed experiment configs: JSON in, validated dataclasses out.

An experiment config is a JSON object with the sections ``model``, ``data``, ``optim``, ``train`` and ``logging``,
a free-text ``description`` (the hypothesis) and an optional ``baseline`` (the name of the run it is compared to).

- Every key is typed by a dataclass field; unknown keys and wrong types are rejected with the key's dotted path.
- ``--set section.key=value`` overrides are parsed as JSON when possible (``3e-4``, ``true``, ``[0.9, 0.95]``) and
  otherwise taken as strings, then type-checked like the file.
- :func:`assignment_experiments.config_validation.validate` checks the values that make no sense together
  (``d_model`` not divisible by ``num_heads``, bad hybrid patterns, a vocabulary too large for the token dtype,
  missing data files) *before* anything is written.
Each problem raises :class:`ConfigError` with one line that names the key and the fix.

Imports go one way: this module -> ``config_validation`` -> ``errors`` (validation names these dataclasses in type
hints only).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from assignment_experiments.config_validation import validate
from assignment_experiments.errors import ConfigError  # re-exported: callers import it from here
from cs336_basics.models.factory import ARGUMENT_PATHS, PLAN_LETTER, d_ff_for_budget
from cs336_basics.models.spec import AttentionSpec, FFNSpec, HymbaSpec, ModelSpec, ResidualSpec, SSMSpec


@dataclass
class ModelConfig:
    """The model: an architecture (a named layer plan) and typed sub-sections, one per concept.

    ``architecture`` picks the plan: ``transformer`` is ``"A" * num_layers``, ``mamba`` ``"M" * num_layers``,
    ``hymba`` ``"H" * num_layers``, ``hybrid`` the ``pattern`` (any registered block letters; ``num_layers`` is then
    its length). The sections are the library's own specs (:mod:`cs336_basics.models.spec`): ``attention``, ``ssm``,
    ``ffn`` (with an optional ``moe``), ``residual`` and ``hymba``; a section the plan does not use must stay at its
    defaults.
    ``ffn`` left out means the architecture's default (SwiGLU; no FFN for ``mamba``), and the resolved value is what
    ``config.json`` records. ``vocab_size`` null takes the data's vocabulary. ``target_params`` (hybrids) picks
    ``ffn.d_ff`` to land closest to that many parameters.
    """

    architecture: Literal["transformer", "mamba", "hybrid", "hymba"] = "transformer"
    vocab_size: int | None = None
    context_length: int = 128
    d_model: int = 128
    num_layers: int = 2
    pattern: str | None = None
    norm: Literal["pre", "post", "none"] = "pre"
    tie_embeddings: bool = False
    num_meta_tokens: int = 0
    norm_layer: Literal["rmsnorm", "layernorm"] = "rmsnorm"
    init: Literal["cs336", "gpt2"] = "cs336"
    embedding_dropout: float = 0.0
    target_params: int | None = None
    attention: AttentionSpec = field(default_factory=AttentionSpec)
    ssm: SSMSpec = field(default_factory=SSMSpec)
    ffn: FFNSpec | None = None
    residual: ResidualSpec = field(default_factory=ResidualSpec)
    hymba: HymbaSpec = field(default_factory=HymbaSpec)

    @property
    def plan(self) -> str:
        if self.architecture == "hybrid":
            return self.pattern or ""
        return PLAN_LETTER[self.architecture] * self.num_layers

    def spec(self, vocab_size: int) -> ModelSpec:
        """The library's :class:`ModelSpec` for this config and ``vocab_size``, validated, with ``target_params``
        applied."""
        ffn = self.ffn if self.ffn is not None else default_ffn(self.architecture)
        spec = ModelSpec(
            vocab_size,
            self.d_model,
            self.plan,
            context_length=None if self.architecture == "mamba" else self.context_length,
            norm=self.norm,
            tie_embeddings=self.tie_embeddings,
            num_meta_tokens=self.num_meta_tokens,
            norm_layer=self.norm_layer,
            init=self.init,
            embedding_dropout=self.embedding_dropout,
            attention=self.attention,
            ssm=dataclasses.replace(self.ssm),
            ffn=ffn,
            residual=self.residual,
            hymba=self.hymba,
        ).validate()
        if self.target_params is not None:
            if ffn.d_ff is not None:
                raise ValueError("set either ffn.d_ff or target_params (which chooses d_ff), not both")
            spec = dataclasses.replace(
                spec, ffn=dataclasses.replace(ffn, d_ff=d_ff_for_budget(spec, self.target_params))
            )
        return spec


def default_ffn(architecture: str) -> FFNSpec:
    """The FFN an architecture has when the config leaves ``model.ffn`` out: SwiGLU, or none for pure Mamba."""
    return FFNSpec(kind="none" if architecture == "mamba" else "swiglu")


def upgrade_model_section(model: dict[str, Any]) -> dict[str, Any]:
    """Move the flat model keys of older configs (``num_heads``, ``d_state``, ``options: {...}``) into their sections.

    Configs written before the model config was split into sections, including ``config.json`` of earlier runs,
    keep loading: each flat key goes where :data:`~cs336_basics.models.factory.ARGUMENT_PATHS` says, and a ``null``
    (which meant "the model's default") is dropped. A flat Hymba section keeps the model it described then: all-global
    attention unless it set a window, and ``hymba.fusion="projected"`` (the paper's schedule and fusion became the
    defaults later); a flat mHC section keeps static maps, 20 Sinkhorn sweeps and no learning-rate multiplier, so
    earlier run folders rebuild the parameters their checkpoints hold.
    """
    model = dict(model)
    options = model.pop("options", None) or {}
    had_ffn_section = isinstance(model.get("ffn"), dict)
    flat = bool(options)
    for key, value in [*list(model.items()), *options.items()]:
        legacy_string = key in ("ffn", "residual") and not isinstance(value, dict)
        path = ARGUMENT_PATHS.get(key, key)
        if "." in path and (key not in ("ffn", "residual") or legacy_string):
            flat = True
            model.pop(key, None)
            section, _, name = path.partition(".")
            ignored = section == "attention" and model.get("architecture") == "mamba"  # the old runner dropped them
            if value is not None and not ignored:
                target = model.setdefault(section, {})
                if isinstance(target, dict):
                    target[name] = value
        elif key in options or value is None and key in LEGACY_NULLABLE:
            model.pop(key, None)
            if value is not None:
                model[key] = value
    ffn = model.get("ffn")
    if isinstance(ffn, dict) and not had_ffn_section and "kind" not in ffn:
        ffn["kind"] = default_ffn(model.get("architecture", "transformer")).kind  # e.g. a Mamba d_ff without an FFN
    if flat and model.get("architecture") == "hymba":
        attention, hymba = model.setdefault("attention", {}), model.setdefault("hymba", {})
        if isinstance(attention, dict) and isinstance(hymba, dict):
            attention.setdefault("window", None)
            hymba.setdefault("fusion", "projected")
    residual = model.get("residual")
    if flat and isinstance(residual, dict) and residual.get("kind") == "mhc":  # static maps, 20 sweeps, one lr
        residual.setdefault("hc_dynamic", False)
        residual.setdefault("sinkhorn_tol", None)
        residual.setdefault("hc_lr_multiplier", 1.0)
    return model


LEGACY_NULLABLE = ("norm", "tie_embeddings", "num_layers", "num_heads")


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

    source: Literal[
        "stories", "tinystories", "owt", "wikitext103", "pg19", "cosmopedia", "jsonl", "text", "tokens", "synthetic"
    ] = "stories"
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
    target_accuracy: float | None = None
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
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key)
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
    elif origin is tuple:
        item_types = typing.get_args(annotation)
        if isinstance(value, list | tuple) and len(value) == len(item_types):
            return tuple(_coerce(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, item_types, strict=True)))
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
    return config_from_dict(apply_overrides(_upgrade(raw), overrides or []))


def config_from_dict(raw: dict[str, Any]) -> ExperimentConfig:
    """Type-check and validate a raw config dict."""
    config = _resolve(_build(ExperimentConfig, _upgrade(raw), ""))
    validate(config)
    return config


def _upgrade(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with an older flat ``model`` section moved into the current sections (see upgrade_model_section)."""
    if isinstance(raw, dict) and isinstance(raw.get("model"), dict):
        return {**raw, "model": upgrade_model_section(raw["model"])}
    return raw


def _resolve(config: ExperimentConfig) -> ExperimentConfig:
    """Fill the defaults that depend on other settings, so the config says what the run uses."""
    if config.model.ffn is None:
        config.model.ffn = default_ffn(config.model.architecture)
    return config


# keys a resumed run may change: its length, its thread count (speed only; float sums may round differently, so a
# run resumed on another count is no longer bit-identical to an uninterrupted one) and its reporting
RESUMABLE_CHANGES = ("train.max_steps", "train.num_threads", "logging.")


def flatten_config(raw: dict[str, Any], prefix: str = "", keep_whole: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{"section.key": value}`` for a nested config dict; dicts under a key in ``keep_whole`` stay one value."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        nested = isinstance(value, dict) and key not in keep_whole
        out.update(flatten_config(value, f"{name}.", keep_whole) if nested else {name: value})
    return out


def completed_config(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` (a config dict as written, perhaps before keys were added) with today's defaults filled in and every
    value type-checked, as a nested dict; not validated, so a run folder whose data has moved still reads. Raises
    ConfigError for an unknown key or a value of the wrong type."""
    return _resolve(_build(ExperimentConfig, _upgrade(raw), "")).to_dict()


def resume_conflicts(saved: dict[str, Any], current: ExperimentConfig) -> list[str]:
    """``key: saved -> current`` for every setting that differs from a checkpoint's config, except resumable ones.

    The saved dict is completed with today's defaults first, so keys added since it was written do not count.
    """
    before = flatten_config(completed_config(saved))
    after = flatten_config(current.to_dict())
    return [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key) and not key.startswith(RESUMABLE_CHANGES)
    ]
