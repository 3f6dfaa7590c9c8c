"""The attention block, plan letter ``A``: causal multi-head attention then a feed-forward network.

Modern (LLaMA-style) pre-norm by default: ``x + attn(RMSNorm(x))`` then ``x + ffn(RMSNorm(x))``. The model's
``norm`` switch gives ``post`` (``RMSNorm(x + f(x))`` after each branch) or ``none``, and ``norm_layer`` LayerNorm
instead of RMSNorm (``ffn.kind="identity"`` with LayerNorm is Zoology's block: ``x + attn(LN(x))`` then
``x + LN(x)``); ``attention.positions`` gives
RoPE (default), a learned absolute table (added by the shell before the blocks) or none (NoPE: only the causal mask
orders tokens). A Transformer language model is the plan ``"A" * num_layers``.

State-dict keys follow the CS336 adapter contract (``docs/ADAPTERS.md``): ``attn.{q,k,v,output}_proj``, ``ln1``,
``ln2``, ``ffn.w1/w2/w3``. Decoding state: a :class:`~cs336_basics.nn.attention.KVCache` (with
``attention.short_conv``, a :class:`ShortConvKVState` that also keeps the convolution's last inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from cs336_basics.models.block import Block, Branch, register_block
from cs336_basics.models.ffn import build_dense_ffn, build_moe_ffn
from cs336_basics.models.spec import AttentionSpec, FFNSpec, ModelSpec
from cs336_basics.nn.attention import CausalMultiHeadSelfAttention, KVCache
from cs336_basics.nn.conv import CausalDepthwiseConv1d, conv_state_after
from cs336_basics.nn.layers import Identity, build_norm


@dataclass
class ShortConvKVState:
    """Decoding state of an attention block with a short convolution: the KV cache and the conv's last inputs."""

    kv: KVCache
    conv: Tensor  # (b, d_model, short_conv - 1)


@register_block("A")
class TransformerBlock(Block):
    """Attention + feed-forward block; keys ``attn.*``, ``ln1``, ``ln2``, ``ffn.*``."""

    uses_positions = True

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        d, attn = spec.d_model, spec.attention
        moe = build_moe_ffn(d, spec.ffn)
        self.norm = spec.norm
        self.attn = CausalMultiHeadSelfAttention(d, attn.num_heads, **spec.attention_options(layer))
        self.ln1 = build_norm(spec.norm_layer, d) if spec.norm != "none" else Identity()
        self.ln2 = build_norm(spec.norm_layer, d) if spec.norm != "none" else Identity()
        self.ffn = moe if moe is not None else build_dense_ffn(d, spec.ffn)
        # optional causal depthwise conv on the attention input (key ``short_conv.weight``/``.bias``)
        self.short_conv = CausalDepthwiseConv1d(d, attn.short_conv) if attn.short_conv else None
        self.uses_positions = attn.positions != "none"
        self.init_residual(spec, ("mixer", "ffn") if self.ffn is not None else ("mixer",))

    @classmethod
    def standalone(
        cls,
        d_model: int,
        num_heads: int,
        d_ff: int | None = None,
        max_seq_len: int = 2048,
        theta: float = 10000.0,
        attn_backend: str = "naive",
    ) -> TransformerBlock:
        """One pre-norm RoPE + SwiGLU block outside a model (the CS336 ``run_transformer_block`` adapter's shape)."""
        spec = ModelSpec(
            1,
            d_model,
            "A",
            context_length=max_seq_len,
            attention=AttentionSpec(num_heads, theta, backend=attn_backend),
            ffn=FFNSpec("swiglu", d_ff),
        )
        return cls(spec.validate(), 0)

    def make_state(self, batch_size: int, capacity: int) -> KVCache | ShortConvKVState:
        kv = self.attn.make_cache(batch_size, capacity)
        if self.short_conv is None:
            return kv
        conv = self.short_conv.weight.new_zeros(batch_size, self.short_conv.channels, self.short_conv.kernel_size - 1)
        return ShortConvKVState(kv, conv)

    def _mix(self, h: Tensor, state: KVCache | ShortConvKVState | None) -> Tensor:
        """Attention over ``h`` (b, T, d), first through the short convolution when there is one."""
        if self.short_conv is None:
            return self.attn(h, None, state)
        conv_state = state.conv if state is not None else None
        x = h.transpose(1, 2)  # (b, d, T)
        mixed = self.short_conv(x, conv_state).transpose(1, 2)  # (b, T, d)
        if state is not None:
            state.conv = conv_state_after(x, self.short_conv.kernel_size, conv_state)
        return self.attn(mixed, None, state.kv if state is not None else None)

    def branches(self, state: KVCache | ShortConvKVState | None) -> list[Branch]:
        if self.norm == "post":
            out = [Branch("mixer", lambda h: self._mix(h, state), post=self.ln1)]
            if self.ffn is not None:
                out.append(Branch("ffn", self.ffn, post=self.ln2))
            return out
        out = [Branch("mixer", lambda h: self._mix(self.ln1(h), state))]
        if self.ffn is not None:
            out.append(Branch("ffn", lambda h: self.ffn(self.ln2(h))))
        return out
