"""Layer-pattern hybrids of attention and Mamba (``HybridLM``), e.g. ``"AAMMAAMMAA"`` or ``"MAMMAMMMA"``.

- ``pattern`` has one character per layer: ``A`` is a :class:`~cs336_basics.models.transformer.TransformerBlock`
  (pre-norm RoPE attention + SwiGLU), ``M`` a :class:`~cs336_basics.models.mamba.MambaLayer` (pre-norm Mamba mixer +
  SwiGLU). Every layer keeps its own FFN and norms. Keys: ``token_embeddings``, ``layers.{i}.*`` (the block's own
  keys), ``ln_final``, ``lm_head``; options add ``hyper.{i}.*`` (mHC mixing) and ``fast_weights.{i}.*``.
- ``moe={"num_experts": E, "top_k": k, ...}`` replaces every layer's FFN by a :class:`MoEFeedForward`;
  ``auxiliary_loss()`` and ``diagnostics()`` report its losses and per-expert load.
- ``residual="mhc"`` runs ``hc_expansion`` residual streams with Sinkhorn-constrained mixing, wrapping each mixer
  (attention / Mamba) branch and each FFN branch separately (:mod:`~cs336_basics.models.hyper_connections`);
  ``hc_residual_logit`` (default 6) sets how close to the identity the stream mixing starts (off-diagonal ~e^-c).
- ``fast_weights=True`` adds a Hebbian fast-weight residual branch after every layer.
- Decoding: ``make_cache`` holds a KV cache for each ``A`` layer and the recurrent state for each ``M`` layer (and
  fast-weight matrices), so each new token costs one position.

Parameter budget. With one FFN width for every layer no single ``d_ff`` puts all the study's patterns (7 to 10 layers)
in one parameter band: at d_model 384 / vocab 10000 an ``A`` layer (4 d^2 attention) and an ``M`` layer (~6.3 d^2
mixer) differ, and the layer count differs. So ``target_params`` chooses ``d_ff`` (a multiple of 64) per pattern to
land closest to the target; the study uses ``STUDY_TARGET_PARAMS`` = 25M, which puts every ``STUDY_PATTERNS`` entry
in 23-27M. Without ``target_params`` the default ``d_ff`` is the usual 8/3 d_model rounded up to 64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.models.base import LanguageModel
from cs336_basics.models.fast_weights import FastWeightBranch, FastWeightState
from cs336_basics.models.hyper_connections import (
    HyperConnection,
    collapse_streams,
    expand_streams,
    mhc_stability_gain,
)
from cs336_basics.models.mamba import MambaLayer
from cs336_basics.models.moe import build_moe, collect_moe_aux_loss, collect_moe_diagnostics
from cs336_basics.models.transformer import TransformerBlock
from cs336_basics.nn.layers import Embedding, Linear, RMSNorm, default_swiglu_d_ff

STUDY_PATTERNS = (
    "AAMMAAMMAA",
    "MAMMAMMMA",
    "AMAMAMAM",
    "MAMAMAMA",
    "AMMMMMMA",
    "AAMMMMAA",
    "AMMMMMA",
    "MMMMAAAA",
    "MMMMAAA",
    "AAAAMMMM",
    "MMMMMMMM",
    "AAAAAAAA",
)
STUDY_TARGET_PARAMS = 25_000_000
RESIDUALS = ("standard", "mhc")


def validate_pattern(pattern: str) -> str:
    """Return ``pattern`` if it is a non-empty string of ``A``/``M``; otherwise a ValueError naming the position."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty string of 'A' (attention) and 'M' (Mamba), got {pattern!r}")
    for position, char in enumerate(pattern):
        if char not in "AM":
            raise ValueError(
                f"pattern {pattern!r} has invalid character {char!r} at position {position}; "
                "use only 'A' (attention) and 'M' (Mamba)"
            )
    return pattern


@dataclass
class HybridCache:
    """Decoding state: per layer a KVCache (``A``) or MambaState (``M``), optional fast-weight states."""

    layers: list[Any]
    fast_weights: list[FastWeightState] | None
    capacity: int
    length: int = 0


class HybridLM(LanguageModel):
    """Attention/Mamba layer-pattern language model; see the module docstring."""

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        validate_pattern(pattern)
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        if target_params is not None:
            if d_ff is not None:
                raise ValueError("pass either d_ff or target_params (which chooses d_ff), not both")
            d_ff = hybrid_d_ff_for_budget(
                target_params,
                vocab_size=vocab_size,
                context_length=context_length,
                d_model=d_model,
                num_heads=num_heads,
                d_state=d_state,
                pattern=pattern,
                d_conv=d_conv,
                expand=expand,
                moe=moe,
                residual=residual,
                hc_expansion=hc_expansion,
                fast_weights=fast_weights,
                fast_weight_heads=fast_weight_heads,
                tie_embeddings=tie_embeddings,
            )
        d_ff = default_swiglu_d_ff(d_model) if d_ff is None else d_ff
        self.vocab_size, self.context_length, self.d_model, self.d_ff = vocab_size, context_length, d_model, d_ff
        self.pattern, self.residual, self.hc_expansion = pattern, residual, hc_expansion

        self.token_embeddings = Embedding(vocab_size, d_model)
        layers: list[nn.Module] = []
        for kind in pattern:
            ffn_module = build_moe(d_model, moe, d_ff)
            if kind == "A":
                layers.append(
                    TransformerBlock(
                        d_model,
                        num_heads,
                        d_ff,
                        max_seq_len=context_length,
                        theta=rope_theta,
                        attn_backend=attn_backend,
                        ffn_module=ffn_module,
                    )
                )
            else:
                layers.append(
                    MambaLayer(
                        d_model,
                        d_state,
                        d_conv,
                        expand,
                        ffn="swiglu" if ffn_module is None else None,
                        d_ff=d_ff,
                        ffn_module=ffn_module,
                        num_layers=len(pattern),
                        scan_backend=scan_backend,
                    )
                )
        self.layers = nn.ModuleList(layers)
        self.fast_weights = (
            nn.ModuleList(FastWeightBranch(d_model, fast_weight_heads) for _ in pattern) if fast_weights else None
        )
        if residual == "mhc":
            branches = ("mixer", "ffn", "fast") if fast_weights else ("mixer", "ffn")
            self.hyper = nn.ModuleList(
                nn.ModuleDict(
                    {b: HyperConnection(None, hc_expansion, sinkhorn_iters, hc_residual_logit) for b in branches}
                )
                for _ in pattern
            )
        self.ln_final = RMSNorm(d_model)
        self.lm_head = Linear(d_model, vocab_size)
        if tie_embeddings:
            std = d_model**-0.5
            nn.init.trunc_normal_(self.token_embeddings.weight, std=std, a=-3 * std, b=3 * std)
            self.lm_head.weight = self.token_embeddings.weight

    def make_cache(self, batch_size: int, max_seq_len: int) -> HybridCache:
        if "A" in self.pattern and max_seq_len > self.context_length:
            raise ValueError(f"cache length {max_seq_len} exceeds context_length {self.context_length}; crop it")
        layers = [
            layer.attn.make_cache(batch_size, max_seq_len) if kind == "A" else layer.make_state(batch_size)
            for kind, layer in zip(self.pattern, self.layers, strict=True)
        ]
        fast = [fw.make_state(batch_size) for fw in self.fast_weights] if self.fast_weights is not None else None
        return HybridCache(layers, fast, capacity=max_seq_len)

    def _branches(self, i: int, entry: Any) -> list[tuple[str, Callable[[Tensor], Tensor]]]:
        """Layer ``i``'s residual branches as ``h -> f(h)`` callables (each normalises its own input)."""
        layer = self.layers[i]
        if self.pattern[i] == "A":
            out = [
                ("mixer", lambda h: layer.attn(layer.ln1(h), None, entry)),
                ("ffn", lambda h: layer.ffn(layer.ln2(h))),
            ]
        else:
            out = [("mixer", lambda h: layer.mixer(layer.norm(h), state=entry))]
            out.append(("ffn", lambda h: layer.ffn(layer.ffn_norm(h))))
        return out

    def forward(
        self, input_ids: Int[Tensor, "b T"], cache: HybridCache | None = None
    ) -> Float[Tensor, "b T vocab_size"]:
        T = input_ids.shape[-1]
        past = cache.length if cache is not None else 0
        if "A" in self.pattern and past + T > self.context_length:
            raise ValueError(f"sequence of {past + T} positions exceeds context_length {self.context_length}; crop it")
        x = self.token_embeddings(input_ids)  # (b, T, d)
        streams = expand_streams(x, self.hc_expansion) if self.residual == "mhc" else None  # (b, T, n, d)
        for i, kind in enumerate(self.pattern):
            entry = cache.layers[i] if cache is not None else None
            fast_state = cache.fast_weights[i] if cache is not None and cache.fast_weights is not None else None
            if streams is None:
                x = self.layers[i](x, cache=entry) if kind == "A" else self.layers[i](x, state=entry)
                if self.fast_weights is not None:
                    x = x + self.fast_weights[i](x, state=fast_state)
                continue
            branches = self._branches(i, entry)
            if self.fast_weights is not None:
                fw = self.fast_weights[i]
                branches.append(("fast", lambda h, fw=fw, s=fast_state: fw(h, state=s)))
            for name, fn in branches:
                streams = self.hyper[i][name].mix(streams, fn)
        if streams is not None:
            x = collapse_streams(streams)  # (b, T, d)
        if cache is not None:
            cache.length += T
        return self.lm_head(self.ln_final(x))  # (b, T, vocab)

    def auxiliary_loss(self) -> Tensor:
        return collect_moe_aux_loss(self)

    def diagnostics(self) -> dict[str, float]:
        """MoE expert loads and losses; with mHC, the gain of the composed residual mixing and its mean off-diagonal."""
        out = collect_moe_diagnostics(self)
        if self.residual == "mhc":
            wrappers = [hc for layer in self.hyper for hc in layer.values()]
            out["mhc/residual_gain"] = mhc_stability_gain(wrappers)
            n = self.hc_expansion
            mixes = [hc.mixing()[2].detach() for hc in wrappers]  # (n, n) each
            off = [float(h.sum() - h.diagonal().sum()) / max(1, n * n - n) for h in mixes]
            out["mhc/mean_off_diagonal"] = sum(off) / len(off)
        return out


def hybrid_d_ff_for_budget(target_params: int, **kwargs: Any) -> int:
    """The ``d_ff`` (multiple of 64, at least 64) whose :class:`HybridLM` comes closest to ``target_params``.

    Parameters are linear in ``d_ff``, so two models built on the meta device (no memory) give the line to solve.
    """

    def count(d_ff: int) -> int:
        with torch.device("meta"):
            model = HybridLM(d_ff=d_ff, **kwargs)
        seen = {id(p): p.numel() for p in model.parameters()}
        return sum(seen.values())

    low, high = count(64), count(128)
    per_unit = (high - low) / 64
    units = round((target_params - low) / per_unit / 64 + 1)
    return 64 * max(1, units)
