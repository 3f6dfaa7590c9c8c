"""The one language-model shell: token embedding -> blocks built from a layer plan -> final norm -> head.

Every architecture is this class with a different :class:`~cs336_basics.models.spec.ModelSpec`: a Transformer is
the plan ``"A" * n``, Mamba ``"M" * n``, a hybrid any pattern such as ``"AMAM"``, Hymba ``"H" * n`` with meta
tokens. The extension point is the plan: to add a block type, write one
:class:`~cs336_basics.models.block.Block` subclass and register one letter (see :mod:`~cs336_basics.models.block`).

The interface the trainer, decoder and runner use:

- ``forward(input_ids, cache=None)`` maps token ids ``(batch, seq)`` to logits ``(batch, seq, vocab)``: one row per
  *input* position (meta tokens are dropped before the head).
- ``make_cache(batch_size, max_seq_len)`` returns a :class:`DecodingCache`; ``forward(ids, cache=cache)`` then treats
  ``ids`` as the continuation of what the cache has seen and updates it in place, so each new token costs one
  position (KV caches for attention, recurrent states for SSMs).
- ``auxiliary_loss()``: the weighted auxiliary losses of the last forward (MoE load balancing and router z-loss),
  which the trainer adds to the cross-entropy; zero without MoE.
- ``diagnostics()``: scalars for the logs: MoE per-expert load and losses, each block's own (Hymba branch shares),
  and with mHC the gain of the composed residual mixing and how far the mixing has moved from its initialisation
  (:func:`~cs336_basics.models.hyper_connections.mhc_diagnostics`).

Shell details: ``position_embeddings`` (a learned absolute table, initialised at std 0.02 as in GPT-2) exists with
``attention.positions="learned"``; ``embedding_dropout`` applies to tokens plus positions; ``init="gpt2"`` re-draws
the weights as GPT-2 and Zoology do (:func:`gpt2_init`);
with ``tie_embeddings`` the head reuses the token-embedding matrix, initialised with std ``d_model**-0.5`` so the
initial logits have unit scale (N(0, 1) would give std ``sqrt(d_model)``); ``norm="pre"`` puts an RMSNorm before
the head (post-norm and no-norm models have none); with mHC the hidden state is expanded into ``n`` residual
streams before the first block and read out after the last.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from cs336_basics.models.base import no_weight_decay
from cs336_basics.models.block import BlockState, block_class
from cs336_basics.models.hyper_connections import (
    HyperConnection,
    collapse_streams,
    expand_streams,
    mhc_diagnostics,
)
from cs336_basics.models.moe import collect_moe_diagnostics
from cs336_basics.models.spec import ModelSpec
from cs336_basics.nn.layers import Embedding, Identity, Linear, build_norm, dropout


@dataclass
class DecodingCache:
    """Incremental-decoding state of a :class:`LanguageModel`: one state per layer and the tokens consumed so far.

    ``length`` counts input tokens (meta tokens are not counted); ``capacity`` is the most positions it may hold.
    """

    layers: list[BlockState]
    capacity: int | None
    length: int = 0


class LanguageModel(nn.Module):
    """Decoder-only language model over a layer plan; see the module docstring."""

    accepts_score_mask = True  # forward(..., score_mask=) runs the output layer on the scored positions only

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        spec.validate()
        self.spec = spec
        d = spec.d_model
        self.vocab_size, self.d_model, self.num_layers = spec.vocab_size, d, spec.num_layers
        self.num_meta_tokens = spec.num_meta_tokens
        # positions are an attention setting: a plan without positional blocks (pure Mamba) gets no table, as in Zoology
        positional = any(block_class(letter).uses_positions for letter in spec.plan)
        self.learned_positions = spec.attention.positions == "learned" and positional
        self.token_embeddings = Embedding(spec.vocab_size, d)
        if self.learned_positions:
            self.position_embeddings = Embedding(spec.context_length, d)
            std = spec.attention.position_std  # small (GPT-2's 0.02): at std 1 it would drown the token embeddings
            with torch.no_grad():
                nn.init.trunc_normal_(self.position_embeddings.weight, std=std, a=-3 * std, b=3 * std)
        if spec.num_meta_tokens:
            meta = torch.randn(spec.num_meta_tokens, d) * d**-0.5
            self.meta_tokens = no_weight_decay(nn.Parameter(meta))  # learned inputs, not a weight matrix
        self.layers = nn.ModuleList(block_class(letter)(spec, i) for i, letter in enumerate(spec.plan))
        for block in self.layers:
            block.connect(list(self.layers))
        self.ln_final = build_norm(spec.norm_layer, d) if spec.norm == "pre" else Identity()
        self.lm_head = Linear(d, spec.vocab_size)
        if spec.tie_embeddings:  # one matrix for input and output: std d^-0.5 gives unit-scale initial logits
            std = d**-0.5
            nn.init.trunc_normal_(self.token_embeddings.weight, std=std, a=-3 * std, b=3 * std)
            self.lm_head.weight = self.token_embeddings.weight
        if spec.init == "gpt2":
            gpt2_init(self)
        # Positions are bounded when any block reads them (RoPE) or the shell adds a learned table.
        self.bounded = self.learned_positions or any(block.uses_positions for block in self.layers)
        self.context_length = spec.context_length if self.bounded else None

    @property
    def plan(self) -> str:
        return self.spec.plan

    def make_cache(self, batch_size: int, max_seq_len: int | None = None) -> DecodingCache:
        """Empty per-layer states for decoding up to ``max_seq_len`` tokens (unbounded for pure recurrent plans)."""
        if self.bounded:
            if max_seq_len is None:
                max_seq_len = self.context_length
            if max_seq_len > self.context_length:
                raise ValueError(
                    f"cache length {max_seq_len} exceeds context_length {self.context_length}; "
                    "crop the sequence or build the model with a longer context"
                )
        capacity = None if max_seq_len is None else max_seq_len + self.num_meta_tokens
        layers = [block.new_state(batch_size, capacity or 0) for block in self.layers]
        return DecodingCache(layers, capacity)

    def forward(
        self,
        input_ids: Int[Tensor, "b T"],
        cache: DecodingCache | None = None,
        score_mask: Bool[Tensor, "b T"] | None = None,
    ) -> Float[Tensor, "b T vocab_size"] | Float[Tensor, "n vocab_size"]:
        """Logits for every position, or with ``score_mask`` only for its ``n`` True positions (row-major order)."""
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, seq), got shape {tuple(input_ids.shape)}")
        if cache is not None and len(cache.layers) != len(self.layers):
            raise ValueError(f"cache has {len(cache.layers)} layer states, model {len(self.layers)}; use make_cache")
        b, T = input_ids.shape
        past = cache.length if cache is not None else 0
        if self.bounded and past + T > self.context_length:
            raise ValueError(
                f"sequence of {past + T} positions exceeds context_length {self.context_length}; crop the input"
            )
        x = self.token_embeddings(input_ids)  # (b, T, d)
        if self.learned_positions:
            x = x + self.position_embeddings(torch.arange(past, past + T, device=input_ids.device))
        x = dropout(x, self.spec.embedding_dropout, self.training)
        prepend = self.num_meta_tokens if past == 0 else 0  # meta tokens go in once, before the first token
        if prepend:
            x = torch.cat([self.meta_tokens.to(x.dtype).expand(b, -1, -1), x], dim=1)  # (b, M + T, d)
        mhc = self.spec.residual.kind == "mhc"
        if mhc:
            x = expand_streams(x, self.spec.residual.hc_expansion)  # (b, T, n, d)
        for i, block in enumerate(self.layers):
            x = block(x, cache.layers[i] if cache is not None else None)
        if mhc:
            x = collapse_streams(x)  # (b, T, d)
        if cache is not None:
            cache.length += T
        x = x[:, prepend:]  # (b, T, d)
        if score_mask is not None:
            if score_mask.shape != input_ids.shape:
                raise ValueError(
                    f"score_mask must have the input's shape {tuple(input_ids.shape)}, got {tuple(score_mask.shape)}"
                )
            x = x[score_mask]  # (n, d)
        return self.lm_head(self.ln_final(x))  # (b, T, vocab) or (n, vocab)

    def auxiliary_loss(self) -> Tensor:
        """Sum of the weighted auxiliary losses of every sub-module that has one (MoE; zero without)."""
        return collect_auxiliary_losses(self)

    def diagnostics(self) -> dict[str, float]:
        """MoE loads and losses, each block's own scalars, and the mHC mixing summary."""
        out = collect_moe_diagnostics(self)
        for i, block in enumerate(self.layers):
            for key, value in block.diagnostics().items():
                out[f"{block.diagnostics_group}/layer{i}/{key}"] = value
        wrappers = [m for m in self.modules() if isinstance(m, HyperConnection)]
        out.update({f"mhc/{key}": value for key, value in mhc_diagnostics(wrappers).items()})
        return out


GPT2_STD = 0.02


def gpt2_init(model: LanguageModel) -> None:
    """Re-initialise ``model`` as GPT-2 and Zoology's ``_init_weights`` do (``spec.init="gpt2"``).

    Embedding tables (token, position), the head and every linear layer of the attention blocks from N(0, 0.02), their
    biases at zero; the projections that write into the residual stream (attention ``output_proj``, FFN ``w2``) at
    ``0.02 / sqrt(2 num_layers)``. Mamba and Hymba blocks, meta tokens and short convolutions keep their own init.
    """
    from cs336_basics.models.transformer import TransformerBlock

    residual_std = GPT2_STD / (2 * model.num_layers) ** 0.5
    with torch.no_grad():
        tables = [model.token_embeddings, model.lm_head]
        if model.learned_positions:
            tables.append(model.position_embeddings)
        linears = [(m, GPT2_STD) for m in tables]
        for block in model.layers:
            if not isinstance(block, TransformerBlock):
                continue
            for name, module in block.named_modules():
                if isinstance(module, Linear):
                    writes_residual = name.endswith(("output_proj", "w2"))
                    linears.append((module, residual_std if writes_residual else GPT2_STD))
        for module, std in linears:
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)


def collect_auxiliary_losses(module: nn.Module) -> Tensor:
    """Sum of ``auxiliary_loss()`` over the sub-modules of ``module`` that define it (zero if none do)."""
    total = torch.zeros((), device=next(module.parameters()).device)
    for sub in module.modules():
        if sub is not module and callable(getattr(sub, "auxiliary_loss", None)):
            total = total + sub.auxiliary_loss()
    return total
