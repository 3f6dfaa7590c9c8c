"""The Hymba block, plan letter ``H``: attention and SSM heads side by side in one layer (Dong et al., 2024).

- The layer normalises its input once and feeds it to both a causal multi-head attention (RoPE) and a Mamba mixer.
  Each branch's output is RMS-normalised (the two have very different scales), scaled by a learned per-channel
  vector (``beta_attn``, ``beta_ssm``, initialised to one), the two are averaged and projected out (``out_proj``),
  and added to the residual; a pre-norm SwiGLU (or MoE) FFN follows.
- ``diagnostics()`` reports the learned branch share from the scale magnitudes,
  ``share_attn = mean|beta_attn| / (mean|beta_attn| + mean|beta_ssm|)`` and ``share_ssm = 1 - share_attn``.
- A Hymba language model is the plan ``"H" * num_layers``, usually with ``num_meta_tokens`` learned meta tokens
  (prepended by the shell) and sliding-window attention outside ``global_layers`` (``attention.window``).
- Decoding state: ``(KVCache, MambaState)``.

Keys: ``norm``, ``attn.*``, ``mixer.*``, ``attn_norm``, ``ssm_norm``, ``beta_attn``, ``beta_ssm``, ``out_proj``,
``ffn_norm``, ``ffn.*``.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from cs336_basics.models.block import Block, Branch, register_block
from cs336_basics.models.ffn import build_dense_ffn, build_moe_ffn
from cs336_basics.models.mamba import mamba_mixer
from cs336_basics.models.mamba_block import MambaState
from cs336_basics.models.spec import ModelSpec
from cs336_basics.nn.attention import CausalMultiHeadSelfAttention, KVCache
from cs336_basics.nn.layers import Linear, RMSNorm


@register_block("H")
class HymbaLayer(Block):
    """Parallel attention + SSM heads with normalised, learned-scale fusion, then an FFN."""

    uses_positions = True
    diagnostics_group = "hymba"

    def __init__(self, spec: ModelSpec, layer: int) -> None:
        super().__init__()
        d, attn = spec.d_model, spec.attention
        moe = build_moe_ffn(d, spec.ffn)
        self.norm = RMSNorm(d)
        self.attn = CausalMultiHeadSelfAttention(
            d,
            attn.num_heads,
            max_seq_len=(spec.context_length or 0) + spec.num_meta_tokens,
            theta=attn.rope_theta,
            backend=attn.backend,
            window=spec.attention_window(layer),
        )
        self.mixer = mamba_mixer(d, spec.ssm)
        self.attn_norm = RMSNorm(d)
        self.ssm_norm = RMSNorm(d)
        self.beta_attn = nn.Parameter(torch.ones(d))
        self.beta_ssm = nn.Parameter(torch.ones(d))
        self.out_proj = Linear(d, d)
        self.ffn_norm = RMSNorm(d)
        self.ffn = moe if moe is not None else build_dense_ffn(d, spec.ffn)
        self.init_residual(spec, ("mixer", "ffn"))

    def make_state(self, batch_size: int, capacity: int) -> tuple[KVCache, MambaState]:
        return self.attn.make_cache(batch_size, capacity), self.mixer.make_state(batch_size)

    def branch_shares(self) -> tuple[float, float]:
        """``(share_attn, share_ssm)`` from the mean magnitudes of the learned scales; they sum to one."""
        a, s = self.beta_attn.detach().abs().mean(), self.beta_ssm.detach().abs().mean()
        share_attn = float(a / (a + s))
        return share_attn, 1.0 - share_attn

    def diagnostics(self) -> dict[str, float]:
        share_attn, share_ssm = self.branch_shares()
        return {"share_attn": share_attn, "share_ssm": share_ssm}

    def fuse(self, h: Float[Tensor, "b T d"], state: tuple[KVCache, MambaState] | None) -> Float[Tensor, "b T d"]:
        """The mixer branch: both heads on the normalised input, normalised, scaled, averaged and projected."""
        kv, ssm_state = state if state is not None else (None, None)
        h = self.norm(h)
        a = self.attn_norm(self.attn(h, None, kv)) * self.beta_attn  # (b, T, d)
        s = self.ssm_norm(self.mixer(h, state=ssm_state)) * self.beta_ssm  # (b, T, d)
        return self.out_proj(0.5 * (a + s))

    def branches(self, state: tuple[KVCache, MambaState] | None) -> list[Branch]:
        out = [Branch("mixer", lambda h: self.fuse(h, state))]
        if self.ffn is not None:
            out.append(Branch("ffn", lambda h: self.ffn(self.ffn_norm(h))))
        return out
