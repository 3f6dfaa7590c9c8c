"""Named architectures as layer plans: keyword arguments -> :class:`ModelSpec` -> :class:`LanguageModel`.

- ``transformer``: the plan ``"A" * num_layers`` (pre/post/no norm, RoPE/learned/no positions, SwiGLU/SiLU).
- ``mamba``: ``"M" * num_layers``, no FFN unless asked for, no positions (``context_length`` is not needed).
- ``hybrid``: the user's ``pattern`` of registered letters (``A``/``M``/...), SwiGLU FFN in every layer; optional
  mHC residual streams, fast weights and ``target_params`` (chooses ``d_ff`` to fit a parameter budget).
- ``hymba``: ``"H" * num_layers`` with ``num_meta_tokens`` and sliding-window attention outside ``global_layers``.

:func:`build_model` takes the architecture name and the flat keyword arguments of the builder (the same names the
JSON configs use) and checks them against the builder's signature first, so a typo or an option the architecture
does not have (``d_state`` for a Transformer) is a one-line error naming the accepted arguments. ``moe`` is a dict of
:class:`MoESpec` fields in every architecture.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

import torch

from cs336_basics.models.language_model import LanguageModel
from cs336_basics.models.spec import AttentionSpec, FFNSpec, ModelSpec, MoESpec, ResidualSpec, SSMSpec


def moe_spec(moe: dict[str, Any] | MoESpec | None) -> MoESpec | None:
    """A :class:`MoESpec` from a config dict such as ``{"num_experts": 8, "top_k": 2}`` (None stays None)."""
    if moe is None or isinstance(moe, MoESpec):
        return moe
    allowed = {f.name for f in fields(MoESpec)}
    unknown = set(moe) - allowed
    if unknown:
        raise ValueError(f"moe config has unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    return MoESpec(**moe)


def _ssm(
    d_state: int, d_conv: int, expand: int, scan_backend: str, **switches: Any
) -> SSMSpec:  # switches: dt_rank, dt_limit, a_min_magnitude, conv_norm, decay_limit, checkpoint_scan
    return SSMSpec(d_state=d_state, d_conv=d_conv, expand=expand, scan_backend=scan_backend, **switches)


def transformer_spec(
    vocab_size: int,
    context_length: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    d_ff: int | None = None,
    rope_theta: float = 10000.0,
    norm: str = "pre",
    positions: str = "rope",
    ffn: str = "swiglu",
    tie_embeddings: bool = False,
    attn_backend: str = "naive",
    window: int | None = None,
    global_layers: list[int] | None = None,
    moe: dict[str, Any] | None = None,
) -> ModelSpec:
    """A Transformer: ``"A" * num_layers``."""
    return ModelSpec(
        vocab_size,
        d_model,
        "A" * num_layers,
        context_length=context_length,
        norm=norm,
        tie_embeddings=tie_embeddings,
        attention=AttentionSpec(num_heads, rope_theta, positions, attn_backend, window, global_layers),
        ffn=FFNSpec(ffn, d_ff, moe_spec(moe)),
    )


def mamba_spec(
    vocab_size: int,
    d_model: int,
    num_layers: int,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    ffn: str | None = None,
    d_ff: int | None = None,
    tie_embeddings: bool = False,
    scan_backend: str = "auto",
    dt_rank: int | None = None,
    dt_limit: tuple[float, float] | None = None,
    a_min_magnitude: float | None = None,
    conv_norm: bool = False,
    decay_limit: tuple[float, float] | None = None,
    checkpoint_scan: bool = False,
    moe: dict[str, Any] | None = None,
) -> ModelSpec:
    """Pure Mamba: ``"M" * num_layers``; no FFN unless ``ffn`` or ``moe`` is given."""
    return ModelSpec(
        vocab_size,
        d_model,
        "M" * num_layers,
        tie_embeddings=tie_embeddings,
        ssm=_ssm(
            d_state,
            d_conv,
            expand,
            scan_backend,
            dt_rank=dt_rank,
            dt_limit=None if dt_limit is None else tuple(dt_limit),
            a_min_magnitude=a_min_magnitude,
            conv_norm=conv_norm,
            decay_limit=None if decay_limit is None else tuple(decay_limit),
            checkpoint_scan=checkpoint_scan,
        ),
        ffn=FFNSpec(ffn or "none", d_ff, moe_spec(moe)),
    )


def hybrid_spec(
    vocab_size: int,
    context_length: int,
    d_model: int,
    num_heads: int,
    d_ff: int | None = None,
    d_state: int = 16,
    pattern: str = "AMAM",
    rope_theta: float = 10000.0,
    d_conv: int = 4,
    expand: int = 2,
    moe: dict[str, Any] | None = None,
    residual: str = "standard",
    hc_expansion: int = 4,
    sinkhorn_iters: int = 20,
    hc_residual_logit: float = 6.0,
    fast_weights: bool = False,
    fast_weight_heads: int = 4,
    tie_embeddings: bool = False,
    attn_backend: str = "naive",
    scan_backend: str = "auto",
    target_params: int | None = None,
) -> ModelSpec:
    """A layer-pattern hybrid: ``pattern`` is the plan; every layer has its own SwiGLU (or MoE) FFN."""
    spec = ModelSpec(
        vocab_size,
        d_model,
        pattern,
        context_length=context_length,
        tie_embeddings=tie_embeddings,
        attention=AttentionSpec(num_heads, rope_theta, backend=attn_backend),
        ssm=_ssm(d_state, d_conv, expand, scan_backend),
        ffn=FFNSpec("swiglu", d_ff, moe_spec(moe)),
        residual=ResidualSpec(
            residual, hc_expansion, sinkhorn_iters, hc_residual_logit, fast_weights, fast_weight_heads
        ),
    )
    if target_params is not None:
        if d_ff is not None:
            raise ValueError("pass either d_ff or target_params (which chooses d_ff), not both")
        spec = replace(spec, ffn=replace(spec.ffn, d_ff=d_ff_for_budget(spec.validate(), target_params)))
    return spec


def hymba_spec(
    vocab_size: int,
    context_length: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    d_ff: int | None = None,
    d_state: int = 16,
    d_conv: int = 4,
    expand: int = 2,
    rope_theta: float = 10000.0,
    num_meta_tokens: int = 0,
    window: int | None = None,
    global_layers: list[int] | None = None,
    moe: dict[str, Any] | None = None,
    tie_embeddings: bool = False,
    attn_backend: str = "naive",
    scan_backend: str = "auto",
) -> ModelSpec:
    """Hymba: ``"H" * num_layers`` with meta tokens and sliding windows outside ``global_layers``."""
    return ModelSpec(
        vocab_size,
        d_model,
        "H" * num_layers,
        context_length=context_length,
        tie_embeddings=tie_embeddings,
        num_meta_tokens=num_meta_tokens,
        attention=AttentionSpec(
            num_heads, rope_theta, backend=attn_backend, window=window, global_layers=global_layers
        ),
        ssm=_ssm(d_state, d_conv, expand, scan_backend),
        ffn=FFNSpec("swiglu", d_ff, moe_spec(moe)),
    )


ARCHITECTURES: dict[str, Callable[..., ModelSpec]] = {
    "transformer": transformer_spec,
    "mamba": mamba_spec,
    "hybrid": hybrid_spec,
    "hymba": hymba_spec,
}
# Architectures whose tied embeddings are rescaled to std d^-0.5 at init (the others keep N(0, 1)).
_RESCALED_TIED_INIT = ("transformer", "hybrid")
# Architectures whose MoE dict used to be validated by building (and discarding) one MoE layer first.
_MOE_PROBE = ("transformer", "mamba")


def accepted_arguments(architecture: str) -> set[str]:
    """Keyword arguments the architecture accepts."""
    return set(inspect.signature(_builder(architecture)).parameters)


def _builder(architecture: str) -> Callable[..., ModelSpec]:
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose one of {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[architecture]


def model_spec(architecture: str, **kwargs: Any) -> ModelSpec:
    """The validated :class:`ModelSpec` for ``architecture`` and its flat keyword arguments (nothing is built)."""
    unknown = sorted(set(kwargs) - accepted_arguments(architecture))
    if unknown:
        raise ValueError(
            f"{architecture} does not take argument(s) {unknown}; accepted: {sorted(accepted_arguments(architecture))}"
        )
    return _builder(architecture)(**kwargs).validate()


def build_model(architecture: str, **kwargs: Any) -> LanguageModel:
    """Construct the language model named by ``architecture`` from the flat keyword arguments of its builder."""
    spec = model_spec(architecture, **kwargs)
    if architecture in _MOE_PROBE and spec.ffn.moe is not None:
        from cs336_basics.models.ffn import build_moe_ffn

        build_moe_ffn(spec.d_model, spec.ffn)  # consumes the random draws the published MoE runs were built after
    return LanguageModel(spec, legacy_tied_init=architecture in _RESCALED_TIED_INIT)


def transformer_lm(*args: Any, **kwargs: Any) -> LanguageModel:
    """A Transformer language model (arguments of :func:`transformer_spec`)."""
    return build_model("transformer", **inspect.signature(transformer_spec).bind(*args, **kwargs).arguments)


def mamba_lm(*args: Any, **kwargs: Any) -> LanguageModel:
    """A Mamba language model (arguments of :func:`mamba_spec`)."""
    return build_model("mamba", **inspect.signature(mamba_spec).bind(*args, **kwargs).arguments)


def hybrid_lm(*args: Any, **kwargs: Any) -> LanguageModel:
    """A layer-pattern hybrid language model (arguments of :func:`hybrid_spec`)."""
    return build_model("hybrid", **inspect.signature(hybrid_spec).bind(*args, **kwargs).arguments)


def hymba_lm(*args: Any, **kwargs: Any) -> LanguageModel:
    """A Hymba language model (arguments of :func:`hymba_spec`)."""
    return build_model("hymba", **inspect.signature(hymba_spec).bind(*args, **kwargs).arguments)


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
