"""Hymba-style parallel hybrid heads (Dong et al., 2024): attention and SSM heads side by side in every layer.

- A :class:`HymbaLayer` normalises its input once and feeds it to both a causal multi-head attention (RoPE) and a
  Mamba mixer. Each branch's output is RMS-normalised (the two have very different scales), scaled by a learned
  per-channel vector (``beta_attn``, ``beta_ssm``, initialised to one), the two are averaged and projected out
  (``out_proj``), and added to the residual; a pre-norm SwiGLU (or MoE) FFN follows.
- ``diagnostics()`` reports each layer's learned branch share from the scale magnitudes,
  ``share_attn = mean|beta_attn| / (mean|beta_attn| + mean|beta_ssm|)`` and ``share_ssm = 1 - share_attn``.
- ``num_meta_tokens`` learned meta tokens are prepended to every sequence (they give attention a learned "sink" and
  the SSM a learned initial context); their positions are removed from the returned logits, so the loss never sees
  them. With a decoding cache they are fed once, on the first call. They are learned inputs, not a weight matrix,
  so they are excluded from weight decay.
- ``window`` makes attention sliding-window on every layer except ``global_layers`` (indices, default: first, middle
  and last), as in Hymba; ``window=None`` keeps every layer global.

Keys: ``token_embeddings``, ``meta_tokens`` (if any), ``layers.{i}.{norm, attn.*, mixer.*, attn_norm, ssm_norm,
beta_attn, beta_ssm, out_proj, ffn_norm, ffn.*}``, ``ln_final``, ``lm_head``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from cs336_basics.models.base import LanguageModel, no_weight_decay
from cs336_basics.models.mamba_block import MambaBlock, MambaState
from cs336_basics.models.moe import build_moe, collect_moe_aux_loss, collect_moe_diagnostics
from cs336_basics.nn.attention import CausalMultiHeadSelfAttention, KVCache
from cs336_basics.nn.layers import Embedding, Linear, RMSNorm, SwiGLU


class HymbaLayer(nn.Module):
    """Parallel attention + SSM heads with normalised, learned-scale fusion, then an FFN."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        max_seq_len: int,
        theta: float = 10000.0,
        d_ff: int | None = None,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        window: int | None = None,
        ffn_module: nn.Module | None = None,
        attn_backend: str = "naive",
        scan_backend: str = "auto",
    ) -> None:
        super().__init__()
        self.norm = RMSNorm(d_model)
        self.attn = CausalMultiHeadSelfAttention(
            d_model, num_heads, max_seq_len=max_seq_len, theta=theta, backend=attn_backend, window=window
        )
        self.mixer = MambaBlock(d_model, d_state, d_conv, expand, scan_backend=scan_backend)
        self.attn_norm = RMSNorm(d_model)
        self.ssm_norm = RMSNorm(d_model)
        self.beta_attn = nn.Parameter(torch.ones(d_model))
        self.beta_ssm = nn.Parameter(torch.ones(d_model))
        self.out_proj = Linear(d_model, d_model)
        self.ffn_norm = RMSNorm(d_model)
        self.ffn = ffn_module if ffn_module is not None else SwiGLU(d_model, d_ff)

    def branch_shares(self) -> tuple[float, float]:
        """``(share_attn, share_ssm)`` from the mean magnitudes of the learned scales; they sum to one."""
        a, s = self.beta_attn.detach().abs().mean(), self.beta_ssm.detach().abs().mean()
        share_attn = float(a / (a + s))
        return share_attn, 1.0 - share_attn

    def forward(
        self, x: Float[Tensor, "b T d"], cache: tuple[KVCache, MambaState] | None = None
    ) -> Float[Tensor, "b T d"]:
        kv, state = cache if cache is not None else (None, None)
        h = self.norm(x)
        a = self.attn_norm(self.attn(h, None, kv)) * self.beta_attn  # (b, T, d)
        s = self.ssm_norm(self.mixer(h, state=state)) * self.beta_ssm  # (b, T, d)
        x = x + self.out_proj(0.5 * (a + s))
        return x + self.ffn(self.ffn_norm(x))


@dataclass
class HymbaCache:
    """Per-layer ``(KVCache, MambaState)`` pairs and the number of positions (meta tokens included) consumed."""

    layers: list[tuple[KVCache, MambaState]]
    length: int = 0


class HymbaLM(LanguageModel):
    """Language model of :class:`HymbaLayer` s; see the module docstring."""

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        if num_layers < 1 or num_meta_tokens < 0:
            raise ValueError(f"need num_layers >= 1 and num_meta_tokens >= 0, got {num_layers}, {num_meta_tokens}")
        if global_layers is None:
            global_layers = sorted({0, num_layers // 2, num_layers - 1})
        bad = [i for i in global_layers if not 0 <= i < num_layers]
        if bad:
            raise ValueError(f"global_layers {bad} out of range for num_layers={num_layers}")
        self.vocab_size, self.context_length, self.d_model = vocab_size, context_length, d_model
        self.num_meta_tokens, self.global_layers = num_meta_tokens, list(global_layers)
        self.token_embeddings = Embedding(vocab_size, d_model)
        if num_meta_tokens:
            meta = torch.randn(num_meta_tokens, d_model) * d_model**-0.5
            self.meta_tokens = no_weight_decay(nn.Parameter(meta))  # learned inputs, not a weight matrix
        self.layers = nn.ModuleList(
            HymbaLayer(
                d_model,
                num_heads,
                max_seq_len=context_length + num_meta_tokens,
                theta=rope_theta,
                d_ff=d_ff,
                d_state=d_state,
                d_conv=d_conv,
                expand=expand,
                window=None if i in global_layers else window,
                ffn_module=build_moe(d_model, moe, d_ff),
                attn_backend=attn_backend,
                scan_backend=scan_backend,
            )
            for i in range(num_layers)
        )
        self.ln_final = RMSNorm(d_model)
        self.lm_head = Linear(d_model, vocab_size)
        if tie_embeddings:
            self.lm_head.weight = self.token_embeddings.weight

    def make_cache(self, batch_size: int, max_seq_len: int) -> HymbaCache:
        if max_seq_len > self.context_length:
            raise ValueError(f"cache length {max_seq_len} exceeds context_length {self.context_length}; crop it")
        capacity = max_seq_len + self.num_meta_tokens
        return HymbaCache(
            [(layer.attn.make_cache(batch_size, capacity), layer.mixer.make_state(batch_size)) for layer in self.layers]
        )

    def forward(self, input_ids: Int[Tensor, "b T"], cache: HymbaCache | None = None) -> Float[Tensor, "b T vocab"]:
        b, T = input_ids.shape
        past = cache.length - self.num_meta_tokens if cache is not None and cache.length else 0
        if past + T > self.context_length:
            raise ValueError(f"sequence of {past + T} positions exceeds context_length {self.context_length}; crop it")
        x = self.token_embeddings(input_ids)  # (b, T, d)
        prepend = self.num_meta_tokens if cache is None or cache.length == 0 else 0
        if prepend:
            x = torch.cat([self.meta_tokens.to(x.dtype).expand(b, -1, -1), x], dim=1)  # (b, M + T, d)
        for i, layer in enumerate(self.layers):
            x = layer(x, cache.layers[i] if cache is not None else None)
        if cache is not None:
            cache.length += x.shape[1]
        return self.lm_head(self.ln_final(x[:, prepend:]))  # (b, T, vocab): meta positions dropped

    def auxiliary_loss(self) -> Tensor:
        return collect_moe_aux_loss(self)

    def diagnostics(self) -> dict[str, float]:
        out = collect_moe_diagnostics(self)
        for i, layer in enumerate(self.layers):
            out[f"hymba/layer{i}/share_attn"], out[f"hymba/layer{i}/share_ssm"] = layer.branch_shares()
        return out
