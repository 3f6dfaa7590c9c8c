"""The pure Mamba language model: embedding -> N pre-norm Mamba layers -> final norm -> head.

- :class:`MambaLayer` is ``x + MambaBlock(RMSNorm(x))``, optionally followed by ``x + FFN(RMSNorm(x))``
  (``ffn="swiglu"`` or any ``ffn_module``, e.g. an MoE). Hybrid models reuse it as their "M" layer.
- Residual scaling: every residual branch's output projection (``mixer.out_proj`` and the FFN's ``w2``) is scaled at
  init by ``1/sqrt(branches_per_layer * num_layers)`` (GPT-2 / ``mamba_simple`` "rescale prenorm residual" style), so
  the residual stream's variance at init does not grow with depth.
- :class:`MambaLM` follows the :class:`~cs336_basics.models.base.LanguageModel` interface, with recurrent decoding:
  :meth:`MambaLM.make_cache` returns per-layer :class:`~cs336_basics.models.mamba_block.MambaState` (conv state
  ``(b, d_inner, d_conv - 1)``, SSM state ``(b, d_inner, d_state)``); the first ``forward(ids, cache=cache)`` is a
  prefill through the scan, later calls advance token by token in O(1) time per token (no dependence on length).

State-dict layout (``d_inner = expand * d_model``, ``R = dt_rank = ceil(d_model / 16)``, ``n = d_state``):

| key | shape |
| --- | --- |
| ``token_embeddings.weight`` | (vocab_size, d_model) |
| ``layers.{i}.norm.weight`` | (d_model,) |
| ``layers.{i}.mixer.in_proj.weight`` | (2 d_inner, d_model); rows ``[:d_inner]`` are x, ``[d_inner:]`` the gate z |
| ``layers.{i}.mixer.conv1d.weight`` / ``.bias`` | (d_inner, d_conv) / (d_inner,); the last tap is the current token |
| ``layers.{i}.mixer.x_proj.weight`` | (R + 2n, d_inner); rows are ``[dt_low, B, C]`` |
| ``layers.{i}.mixer.dt_proj.weight`` | (d_inner, R) |
| ``layers.{i}.mixer.dt_bias`` | (d_inner,) |
| ``layers.{i}.mixer.A_log`` | (d_inner, n) |
| ``layers.{i}.mixer.D`` | (d_inner,) |
| ``layers.{i}.mixer.out_proj.weight`` | (d_model, d_inner) |
| ``layers.{i}.mixer.conv_norm.weight`` | (d_inner,); only with ``conv_norm=True`` |
| ``layers.{i}.ffn_norm.weight``, ``layers.{i}.ffn.w1/w2/w3.weight`` | only with an FFN (SwiGLU layout of ADAPTERS.md) |
| ``ln_final.weight`` | (d_model,) |
| ``lm_head.weight`` | (vocab_size, d_model); the same tensor as ``token_embeddings.weight`` when tied |
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.models.base import LanguageModel
from cs336_basics.models.mamba_block import MambaBlock, MambaState
from cs336_basics.nn.layers import Embedding, Linear, RMSNorm, SwiGLU

__all__ = ["MambaBlock", "MambaCache", "MambaLM", "MambaLayer", "MambaState"]


class MambaLayer(nn.Module):
    """Pre-norm residual Mamba layer: ``x + mixer(norm(x))``, then ``x + ffn(ffn_norm(x))`` if an FFN is given.

    ``num_layers`` is the depth of the whole network (only used for the residual init scaling); ``block_kwargs`` go to
    :class:`~cs336_basics.models.mamba_block.MambaBlock` (``scan_backend`` and the stability switches).
    """

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        ffn: str | None = None,
        d_ff: int | None = None,
        ffn_module: nn.Module | None = None,
        num_layers: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        if ffn not in (None, "swiglu"):
            raise ValueError(f"ffn must be None or 'swiglu' (or pass ffn_module), got {ffn!r}")
        if ffn is not None and ffn_module is not None:
            raise ValueError("pass either ffn='swiglu' or an ffn_module, not both")
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        factory = {"device": device, "dtype": dtype}
        if ffn == "swiglu":
            ffn_module = SwiGLU(d_model, d_ff, **factory)
        branches = 1 if ffn_module is None else 2
        scale = 1.0 / math.sqrt(branches * num_layers)
        self.norm = RMSNorm(d_model, **factory)
        self.mixer = MambaBlock(d_model, d_state, d_conv, expand, out_proj_scale=scale, **block_kwargs, **factory)
        self.ffn_norm = RMSNorm(d_model, **factory) if ffn_module is not None else None
        self.ffn = ffn_module
        if ffn == "swiglu":
            with torch.no_grad():
                self.ffn.w2.weight.mul_(scale)

    def make_state(self, batch_size: int) -> MambaState:
        return self.mixer.make_state(batch_size)

    def forward(self, x: Float[Tensor, "b L d"], state: MambaState | None = None) -> Float[Tensor, "b L d"]:
        x = x + self.mixer(self.norm(x), state=state)
        if self.ffn is not None:
            x = x + self.ffn(self.ffn_norm(x))
        return x


@dataclass
class MambaCache:
    """Per-layer recurrent states of a :class:`MambaLM`; its size is independent of the sequence length."""

    states: list[MambaState] = field(default_factory=list)

    @property
    def seen(self) -> int:
        """Tokens consumed so far."""
        return self.states[0].seen if self.states else 0


class MambaLM(LanguageModel):
    """Mamba language model; see the module docstring for the architecture and the state-dict layout.

    ``ffn_factory(layer_index)`` may build each layer's FFN (e.g. an MoE) instead of ``ffn="swiglu"``; ``dt_rank`` and
    the stability switches (``dt_limit``, ``a_min_magnitude``, ``conv_norm``, ``decay_limit``; all off by default,
    see :mod:`~cs336_basics.models.mamba_block`) and ``checkpoint_scan`` (recompute the scan in the backward to save
    memory) go to every
    :class:`~cs336_basics.models.mamba_block.MambaBlock`.
    """

    def __init__(
        self,
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
        ffn_factory: Callable[[int], nn.Module] | None = None,
        dt_rank: int | None = None,
        dt_limit: tuple[float, float] | None = None,
        a_min_magnitude: float | None = None,
        conv_norm: bool = False,
        decay_limit: tuple[float, float] | None = None,
        checkpoint_scan: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if vocab_size < 1 or d_model < 1 or num_layers < 1:
            raise ValueError(f"vocab_size, d_model, num_layers must be >= 1, got {vocab_size, d_model, num_layers}")
        if ffn is not None and ffn_factory is not None:
            raise ValueError("pass either ffn='swiglu' or an ffn_factory, not both")
        factory = {"device": device, "dtype": dtype}
        self.vocab_size, self.d_model, self.num_layers = vocab_size, d_model, num_layers
        self.token_embeddings = Embedding(vocab_size, d_model, **factory)
        self.layers = nn.ModuleList(
            MambaLayer(
                d_model,
                d_state,
                d_conv,
                expand,
                ffn=ffn,
                d_ff=d_ff,
                ffn_module=ffn_factory(i) if ffn_factory is not None else None,
                num_layers=num_layers,
                scan_backend=scan_backend,
                dt_rank=dt_rank,
                dt_limit=dt_limit,
                a_min_magnitude=a_min_magnitude,
                conv_norm=conv_norm,
                decay_limit=decay_limit,
                checkpoint_scan=checkpoint_scan,
                **factory,
            )
            for i in range(num_layers)
        )
        self.ln_final = RMSNorm(d_model, **factory)
        self.lm_head = Linear(d_model, vocab_size, **factory)
        if tie_embeddings:
            self.lm_head.weight = self.token_embeddings.weight

    def make_cache(self, batch_size: int, max_seq_len: int | None = None) -> MambaCache:
        """Empty per-layer states; ``max_seq_len`` is accepted for the interface but unused (fixed-size state)."""
        return MambaCache([layer.make_state(batch_size) for layer in self.layers])

    def forward(
        self, input_ids: Int[Tensor, "b L"], cache: MambaCache | None = None
    ) -> Float[Tensor, "b L vocab_size"]:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        if cache is not None and len(cache.states) != len(self.layers):
            raise ValueError(f"cache has {len(cache.states)} layer states, model {len(self.layers)}; use make_cache")
        x = self.token_embeddings(input_ids)  # (b, L, d_model)
        for i, layer in enumerate(self.layers):
            x = layer(x, state=cache.states[i] if cache is not None else None)
        return self.lm_head(self.ln_final(x))  # (b, L, vocab)

    def auxiliary_loss(self) -> Tensor:
        """Sum of the auxiliary losses of plugged-in FFN modules (e.g. MoE load balancing); zero otherwise."""
        total = torch.zeros((), device=self.lm_head.weight.device)
        for layer in self.layers:
            if hasattr(layer.ffn, "auxiliary_loss"):
                total = total + layer.ffn.auxiliary_loss()
        return total
