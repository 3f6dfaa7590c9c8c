"""Named architectures as layer plans: keyword arguments -> :class:`ModelSpec` -> :class:`LanguageModel`.

- ``transformer``: the plan ``"A" * num_layers`` (pre/post/no norm, RoPE/learned/no positions, SwiGLU/SiLU).
- ``mamba``: ``"M" * num_layers``, no FFN unless asked for, no positions (``context_length`` is not needed).
- ``hybrid``: the user's ``pattern`` of registered letters (``A``/``M``/...), SwiGLU FFN in every layer; optional
  mHC residual streams, fast weights and ``target_params`` (chooses ``d_ff`` to fit a parameter budget).
- ``hymba``: ``"H" * num_layers`` with ``num_meta_tokens``, sliding-window attention outside ``global_layers`` (the
  paper's schedule by default; ``window=None`` for all global), ``hymba_fusion`` (``"paper"`` or ``"projected"``),
  ``kv_sharing`` and ``hymba_branches`` (``"both"``; ``"ssm"`` or ``"attention"`` for a one-branch ablation).

:func:`build_model` takes the architecture name and flat, constructor-style arguments (``transformer_lm(vocab_size,
context_length, d_model, num_layers, num_heads, d_ff)`` as in CS336, then keywords), checks them against that
architecture's list first, so a typo or an option the architecture does not have (``d_state`` for a Transformer) is a
one-line error naming the accepted arguments, and maps each onto its place in the :class:`ModelSpec`
(:data:`ARGUMENT_PATHS`). ``moe`` is a dict of :class:`MoESpec` fields in every architecture.
"""

from __future__ import annotations

from dataclasses import fields, replace
from functools import partial
from typing import Any

import torch

from cs336_basics.models.language_model import LanguageModel
from cs336_basics.models.spec import AttentionSpec, FFNSpec, HymbaSpec, ModelSpec, MoESpec, ResidualSpec, SSMSpec


def moe_spec(moe: dict[str, Any] | MoESpec | None) -> MoESpec | None:
    """A :class:`MoESpec` from a config dict such as ``{"num_experts": 8, "top_k": 2}`` (None stays None)."""
    if moe is None or isinstance(moe, MoESpec):
        return moe
    allowed = {f.name for f in fields(MoESpec)}
    unknown = set(moe) - allowed
    if unknown:
        raise ValueError(f"moe config has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return MoESpec(**moe)


# Where each flat argument lives in a ModelSpec: a shell field, or "sub_spec.field".
ARGUMENT_PATHS: dict[str, str] = {
    **{name: name for name in ("vocab_size", "d_model", "context_length", "norm", "tie_embeddings", "num_meta_tokens")},
    "num_heads": "attention.num_heads", "rope_theta": "attention.rope_theta", "positions": "attention.positions",
    "attn_backend": "attention.backend", "window": "attention.window", "global_layers": "attention.global_layers",
    **{name: f"ssm.{name}" for name in (
        "d_state", "d_conv", "expand", "dt_rank", "scan_backend", "dt_limit", "a_min_magnitude", "conv_norm",
        "decay_limit", "checkpoint_scan", "out_norm",
    )},
    "ffn": "ffn.kind", "d_ff": "ffn.d_ff", "moe": "ffn.moe", "residual": "residual.kind",
    **{name: f"residual.{name}" for name in (
        "hc_expansion", "sinkhorn_iters", "hc_residual_logit", "fast_weights", "fast_weight_heads", "hc_dynamic",
        "hc_gate_init", "sinkhorn_tol", "hc_lr_multiplier",
    )},
    "hymba_fusion": "hymba.fusion", "kv_sharing": "hymba.kv_sharing", "hymba_branches": "hymba.branches",
}  # fmt: skip

# Per architecture: the positional arguments (the CS336-style constructor order; leading ones are required), then
# the keyword-only ones. ``num_layers`` and ``pattern`` become the plan; ``target_params`` chooses d_ff.
ARCHITECTURES: dict[str, tuple[tuple[str, ...], int, tuple[str, ...]]] = {
    "transformer": (
        ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff"), 5,
        ("rope_theta", "norm", "positions", "ffn", "tie_embeddings", "attn_backend", "window", "global_layers", "moe"),
    ),
    "mamba": (
        ("vocab_size", "d_model", "num_layers", "d_state", "d_conv", "expand", "ffn", "d_ff"), 3,
        ("tie_embeddings", "scan_backend", "dt_rank", "dt_limit", "a_min_magnitude", "conv_norm", "decay_limit",
         "checkpoint_scan", "moe", "out_norm"),
    ),
    "hybrid": (
        ("vocab_size", "context_length", "d_model", "num_heads", "d_ff", "d_state", "pattern"), 4,
        ("rope_theta", "d_conv", "expand", "moe", "residual", "hc_expansion", "sinkhorn_iters", "hc_residual_logit",
         "fast_weights", "fast_weight_heads", "tie_embeddings", "attn_backend", "scan_backend", "target_params",
         "hc_dynamic", "hc_gate_init", "sinkhorn_tol", "hc_lr_multiplier"),
    ),
    "hymba": (
        ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff", "d_state", "d_conv", "expand",
         "rope_theta", "num_meta_tokens", "window", "global_layers"), 5,
        ("moe", "tie_embeddings", "attn_backend", "scan_backend", "hymba_fusion", "kv_sharing", "hymba_branches"),
    ),
}  # fmt: skip
PLAN_LETTER = {"transformer": "A", "mamba": "M", "hymba": "H"}


def accepted_arguments(architecture: str) -> set[str]:
    """Keyword arguments the architecture accepts."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
    positional, _, keywords = ARCHITECTURES[architecture]
    return {*positional, *keywords}


def model_spec(architecture: str, *args: Any, **kwargs: Any) -> ModelSpec:
    """The validated :class:`ModelSpec` of ``architecture`` from its constructor-style arguments (nothing is built)."""
    accepted = accepted_arguments(architecture)
    positional, required, _ = ARCHITECTURES[architecture]
    if len(args) > len(positional):
        raise TypeError(f"{architecture} takes at most {len(positional)} positional arguments, got {len(args)}")
    doubled = sorted(set(positional[: len(args)]) & set(kwargs))
    unknown = sorted(set(kwargs) - accepted)
    if doubled or unknown:
        problem = f"argument(s) {doubled} given twice" if doubled else f"does not take argument(s) {unknown}"
        raise ValueError(f"{architecture} {problem}; accepted: {sorted(accepted)}")
    values = {**dict(zip(positional, args, strict=False)), **kwargs}
    missing = [name for name in positional[:required] if name not in values]
    if missing:
        raise ValueError(f"{architecture} needs argument(s) {missing}")
    plan = (
        values.pop("pattern", "AMAM")
        if architecture == "hybrid"
        else PLAN_LETTER[architecture] * values.pop("num_layers")
    )
    target_params = values.pop("target_params", None)
    if architecture == "mamba" and values.get("ffn") is None:
        values["ffn"] = "none"  # Mamba layers have no FFN unless one is asked for
    if architecture != "mamba" and "context_length" not in values:
        raise ValueError(f"{architecture} needs context_length")
    sections: dict[str, dict[str, Any]] = {"": {"plan": plan}}
    for name, value in values.items():
        section, _, field_name = ARGUMENT_PATHS[name].rpartition(".")
        if name == "moe":
            value = moe_spec(value)
        elif name in ("dt_limit", "decay_limit") and value is not None:
            value = tuple(value)
        sections.setdefault(section, {})[field_name] = value
    spec = ModelSpec(
        **sections[""],
        attention=AttentionSpec(**sections.get("attention", {})),
        ssm=SSMSpec(**sections.get("ssm", {})),
        ffn=FFNSpec(**sections.get("ffn", {})),
        residual=ResidualSpec(**sections.get("residual", {})),
        hymba=HymbaSpec(**sections.get("hymba", {})),
    ).validate()
    if target_params is not None:
        if spec.ffn.d_ff is not None:
            raise ValueError("pass either d_ff or target_params (which chooses d_ff), not both")
        spec = replace(spec, ffn=replace(spec.ffn, d_ff=d_ff_for_budget(spec, target_params)))
    return spec


def build_model(architecture: str, *args: Any, **kwargs: Any) -> LanguageModel:
    """Construct the language model named by ``architecture`` from its constructor-style arguments."""
    return LanguageModel(model_spec(architecture, *args, **kwargs))


transformer_lm = partial(build_model, "transformer")
mamba_lm = partial(build_model, "mamba")
hybrid_lm = partial(build_model, "hybrid")
hymba_lm = partial(build_model, "hymba")


def d_ff_for_budget(spec: ModelSpec, target_params: int) -> int:
    """The ``d_ff`` (multiple of 64, at least 64) whose model comes closest to ``target_params`` parameters.

    Parameters are linear in ``d_ff``, so two models built on the meta device (no memory) give the line to solve.
    """

    def count(d_ff: int) -> int:
        with torch.device("meta"):
            model = LanguageModel(replace(spec, ffn=replace(spec.ffn, d_ff=d_ff)))
        return sum({id(p): p.numel() for p in model.parameters()}.values())

    low, high = count(64), count(128)
    per_unit = (high - low) / 64
    units = round((target_params - low) / per_unit / 64 + 1)
    return 64 * max(1, units)
