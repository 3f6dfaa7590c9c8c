"""The Transformer language model (pre-norm, RoPE, SwiGLU by default), readable top to bottom.

Architecture (Vaswani et al., 2017, in its modern LLaMA-style form) and the ablation switches it carries:

- ``norm``: ``"pre"`` (default; ``x + f(RMSNorm(x))`` and a final RMSNorm before the head), ``"post"``
  (``RMSNorm(x + f(x))``, no final norm since every block output is already normalised) or ``"none"``.
- ``positions``: ``"rope"`` (default, rotary embeddings on Q/K in every layer), ``"learned"`` (an absolute
  ``position_embeddings`` table of shape ``(context_length, d_model)`` added to the token embeddings) or ``"none"``
  (NoPE: the causal mask is the only source of order).
- ``ffn``: ``"swiglu"`` (default, d_ff = 8/3 d_model rounded up to 64) or ``"silu"`` (d_ff = 1.5x the SwiGLU
  width, exactly the same parameter count); ``ffn_module``/``ffn_factory`` plug in any other feed-forward network
  (e.g. an MoE).
- ``tie_embeddings``: the output head reuses the token-embedding matrix. The shared matrix is then initialised with
  std ``1/sqrt(d_model)`` so that the initial logits have unit scale (N(0, 1) would give std ``sqrt(d_model)``).
- ``attn_backend``: ``"naive"`` (from scratch) or ``"torch_sdpa"`` (PyTorch's fused kernel).

The state-dict keys follow ``shared/docs/ADAPTERS.md`` exactly (``token_embeddings``, ``layers.{i}.attn.*``,
``ln1``, ``ln2``, ``ffn.w1/w2/w3``, ``ln_final``, ``lm_head``). ``make_cache`` + ``forward(ids, cache=cache)``
decode incrementally with a per-layer KV cache.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.models.base import LanguageModel
from cs336_basics.nn.attention import CausalMultiHeadSelfAttention, KVCache
from cs336_basics.nn.layers import Embedding, Linear, RMSNorm, SiLUFFN, SwiGLU, default_swiglu_d_ff

NORMS = ("pre", "post", "none")
POSITIONS = ("rope", "learned", "none")
FFNS = ("swiglu", "silu")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def default_d_ff(d_model: int, ffn: str) -> int:
    """The default FFN width: SwiGLU's ~8/3 d_model (rounded up to a multiple of 64), and for the two-matrix SiLU FFN
    1.5x that, so an ablation that swaps the FFN type keeps exactly the same parameter count at every ``d_model``
    (3 x d_model x d_ff for SwiGLU = 2 x d_model x 1.5 d_ff for SiLU)."""
    _check_choice("ffn", ffn, FFNS)
    swiglu_d_ff = default_swiglu_d_ff(d_model)
    return swiglu_d_ff if ffn == "swiglu" else 3 * swiglu_d_ff // 2


class TransformerBlock(nn.Module):
    """One attention + feed-forward block; keys ``attn.*``, ``ln1``, ``ln2``, ``ffn.*``."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int | None,
        max_seq_len: int,
        theta: float = 10000.0,
        norm: str = "pre",
        positions: str = "rope",
        ffn: str = "swiglu",
        attn_backend: str = "naive",
        ffn_module: nn.Module | None = None,
        window: int | None = None,
    ) -> None:
        super().__init__()
        _check_choice("norm", norm, NORMS)
        _check_choice("positions", positions, POSITIONS)
        _check_choice("ffn", ffn, FFNS)
        self.norm = norm
        self.attn = CausalMultiHeadSelfAttention(
            d_model,
            num_heads,
            positions="rope" if positions == "rope" else "none",  # learned positions are added before the blocks
            max_seq_len=max_seq_len,
            theta=theta,
            backend=attn_backend,
            window=window,
        )
        self.ln1 = RMSNorm(d_model) if norm != "none" else nn.Identity()
        self.ln2 = RMSNorm(d_model) if norm != "none" else nn.Identity()
        if ffn_module is not None:
            self.ffn = ffn_module
        else:
            d_ff = default_d_ff(d_model, ffn) if d_ff is None else d_ff
            self.ffn = SwiGLU(d_model, d_ff) if ffn == "swiglu" else SiLUFFN(d_model, d_ff)

    def forward(
        self,
        x: Float[Tensor, " b t d"],
        token_positions: Int[Tensor, " b t"] | None = None,
        cache: KVCache | None = None,
    ) -> Float[Tensor, " b t d"]:
        if self.norm == "post":
            x = self.ln1(x + self.attn(x, token_positions, cache))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(self.ln1(x), token_positions, cache)
        return x + self.ffn(self.ln2(x))


class TransformerCache:
    """Decoding state of a :class:`TransformerLM`: one :class:`KVCache` per layer plus the positions seen."""

    def __init__(self, layers: list[KVCache]) -> None:
        self.layers = layers

    @property
    def length(self) -> int:
        return self.layers[0].length

    @property
    def capacity(self) -> int:
        return self.layers[0].capacity


class TransformerLM(LanguageModel):
    """Decoder-only Transformer language model mapping token ids ``(B, T)`` to logits ``(B, T, vocab)``."""

    def __init__(
        self,
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
        ffn_factory: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        _check_choice("norm", norm, NORMS)
        _check_choice("positions", positions, POSITIONS)
        self.vocab_size, self.context_length, self.d_model = vocab_size, context_length, d_model
        self.positions, self.tie_embeddings = positions, tie_embeddings
        self.token_embeddings = Embedding(vocab_size, d_model)
        if positions == "learned":
            self.position_embeddings = Embedding(context_length, d_model)
        self.layers = nn.ModuleList(
            TransformerBlock(
                d_model,
                num_heads,
                d_ff,
                max_seq_len=context_length,
                theta=rope_theta,
                norm=norm,
                positions=positions,
                ffn=ffn,
                attn_backend=attn_backend,
                ffn_module=ffn_factory(i) if ffn_factory is not None else None,
            )
            for i in range(num_layers)
        )
        self.ln_final = RMSNorm(d_model) if norm == "pre" else nn.Identity()
        self.lm_head = Linear(d_model, vocab_size)
        if tie_embeddings:
            std = d_model**-0.5
            nn.init.trunc_normal_(self.token_embeddings.weight, std=std, a=-3 * std, b=3 * std)
            self.lm_head.weight = self.token_embeddings.weight
            if positions == "learned":
                nn.init.trunc_normal_(self.position_embeddings.weight, std=std, a=-3 * std, b=3 * std)

    def make_cache(self, batch_size: int, max_seq_len: int) -> TransformerCache:
        if self.positions != "none" and max_seq_len > self.context_length:
            raise ValueError(
                f"cache length {max_seq_len} exceeds context_length {self.context_length}; "
                "crop the sequence or build the model with a longer context"
            )
        return TransformerCache([block.attn.make_cache(batch_size, max_seq_len) for block in self.layers])

    def forward(
        self, input_ids: Int[Tensor, " b t"], cache: TransformerCache | None = None
    ) -> Float[Tensor, " b t vocab"]:
        T = input_ids.shape[-1]
        past = cache.length if cache is not None else 0
        if self.positions != "none" and past + T > self.context_length:
            raise ValueError(
                f"sequence of {past + T} positions exceeds context_length {self.context_length}; crop the input"
            )
        x = self.token_embeddings(input_ids)  # (B, T, D)
        if self.positions == "learned":
            x = x + self.position_embeddings(torch.arange(past, past + T, device=input_ids.device))
        for i, block in enumerate(self.layers):
            x = block(x, cache=cache.layers[i] if cache is not None else None)  # RoPE offsets come from the cache
        return self.lm_head(self.ln_final(x))  # (B, T, vocab)

    def auxiliary_loss(self) -> Tensor:
        """Sum of the auxiliary losses of plugged-in FFN modules (e.g. MoE load balancing); zero otherwise."""
        total = torch.zeros((), device=self.lm_head.weight.device)
        for block in self.layers:
            if hasattr(block.ffn, "auxiliary_loss"):
                total = total + block.ffn.auxiliary_loss()
        return total
