"""Attention: scaled dot-product attention, rotary position embeddings (RoPE) and causal multi-head self-attention.

- ``scaled_dot_product_attention`` is the plain ``softmax(Q K^T / sqrt(d_k)) V`` with a boolean mask over any number
  of leading dimensions (``True`` = may attend).
- ``RotaryPositionalEmbedding`` rotates adjacent pairs of dimensions ``(0, 1), (2, 3), ...``; pair ``k`` at position
  ``i`` turns by ``i / theta^(2k/d_k)``. The cos/sin tables are non-persistent buffers, so they never appear in a
  state dict (the key layout of ``docs/ADAPTERS.md`` stays exact) and are rebuilt on construction.
- ``CausalMultiHeadSelfAttention`` projects Q, K and V with one fused matmul (the three weight matrices are
  concatenated on the fly, so the state dict keeps the separate ``q_proj``/``k_proj``/``v_proj`` keys), applies RoPE
  per head, and attends causally, optionally within a sliding window. ``backend="naive"`` is the from-scratch path;
  ``backend="torch_sdpa"`` is an opt-in fast path through PyTorch's fused kernel. With a :class:`KVCache` it
  treats its input as the continuation of the cached sequence, so decoding costs one position per new token.
- Sliding windows and prefix tokens: with ``window=w`` query ``i`` sees keys ``j`` with ``i - w < j <= i``; the first
  ``num_prefix`` positions (Hymba's meta tokens) stay visible to every query whatever the window, as in the Hymba
  paper (Dong et al., 2024): ``allowed(i, j) = j <= i and (i - j < w or j < num_prefix)``. The same rule holds in the
  naive and ``torch_sdpa`` backends and while decoding from a :class:`KVCache`.
- Hymba options (defaults give the CS336 layer): ``inner_dim`` (width of Q/K/V and of the heads' output, default
  ``d_model``), ``output_proj=False`` (return the concatenated heads, no output projection) and ``kv_proj=False``
  (no K/V projections: the caller passes another layer's post-RoPE keys and values as ``shared_kv``, cross-layer KV
  sharing). ``keep_kv=True`` keeps the last call's post-RoPE keys and values in ``last_kv`` for such a consumer.
- GPT-2/Zoology options: ``bias=True`` gives the Q/K/V and output projections biases (zero-initialised);
  ``dropout`` drops attention weights in training.
- ``attention_weights(x)`` returns the probabilities the layer gives a sequence, for probes such as
  ``assignment_experiments/studies/mqar_attention.py``.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from torch.nn.functional import scaled_dot_product_attention as torch_sdpa  # only for the opt-in "torch_sdpa" backend

from cs336_basics.nn.functional import masked_softmax, softmax
from cs336_basics.nn.layers import Linear, dropout

POSITIONS = ("rope", "none")
BACKENDS = ("naive", "torch_sdpa")


def scaled_dot_product_attention(
    Q: Float[Tensor, " ... q d_k"],
    K: Float[Tensor, " ... k d_k"],
    V: Float[Tensor, " ... k d_v"],
    mask: Bool[Tensor, " ... q k"] | None = None,
    dropout_p: float = 0.0,
) -> Float[Tensor, " ... q d_v"]:
    """``softmax(Q K^T / sqrt(d_k)) V``; where ``mask`` is False the attention weight is zero. ``dropout_p`` drops
    attention weights after the softmax (GPT-2's and Zoology's attention dropout; pass 0 outside training)."""
    scores = (Q * (1.0 / math.sqrt(Q.shape[-1]))) @ K.transpose(-2, -1)  # (..., q, k); scaling Q is cheaper
    weights = masked_softmax(scores, mask, dim=-1) if mask is not None else softmax(scores, dim=-1)
    return dropout(weights, dropout_p, training=True) @ V


class RotaryPositionalEmbedding(nn.Module):
    """RoPE (Su et al., 2021) with precomputed cos/sin tables for positions ``0 .. max_seq_len - 1``."""

    def __init__(self, theta: float, d_k: int, max_seq_len: int, device: torch.device | str | None = None) -> None:
        super().__init__()
        if d_k % 2:
            raise ValueError(f"RoPE needs an even head dimension, got d_k={d_k}")
        self.theta, self.d_k, self.max_seq_len = theta, d_k, max_seq_len
        inv_freq = theta ** (-torch.arange(0, d_k, 2, device=device, dtype=torch.float64) / d_k)  # (d_k/2,)
        angles = torch.arange(max_seq_len, device=device, dtype=torch.float64)[:, None] * inv_freq  # (L, d_k/2)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(
        self, x: Float[Tensor, " ... seq d_k"], token_positions: Int[Tensor, " ... seq"] | None = None
    ) -> Float[Tensor, " ... seq d_k"]:
        if token_positions is None:
            token_positions = torch.arange(x.shape[-2], device=x.device)
        cos = self.cos[token_positions].to(x.dtype)  # (..., seq, d_k/2)
        sin = self.sin[token_positions].to(x.dtype)
        x_even, x_odd = x[..., 0::2], x[..., 1::2]  # (..., seq, d_k/2) each
        rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)  # (..., seq, d_k/2, 2)
        return rotated.flatten(-2)

    def extra_repr(self) -> str:
        return f"theta={self.theta}, d_k={self.d_k}, max_seq_len={self.max_seq_len}"


class KVCache:
    """Preallocated keys and values of one attention layer for incremental decoding.

    ``keys``/``values`` have shape ``(batch, heads, max_seq_len, head_dim)``; ``length`` positions are filled.
    """

    def __init__(
        self,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        max_seq_len: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        shape = (batch_size, num_heads, max_seq_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def capacity(self) -> int:
        return self.keys.shape[2]

    def append(
        self, keys: Float[Tensor, " b h t d"], values: Float[Tensor, " b h t d"]
    ) -> tuple[Float[Tensor, " b h s d"], Float[Tensor, " b h s d"]]:
        """Store ``t`` new positions and return all keys and values seen so far (``s = length + t``)."""
        start, end = self.length, self.length + keys.shape[2]
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.capacity}; make a larger cache")
        self.keys[:, :, start:end] = keys
        self.values[:, :, start:end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


def causal_mask(
    num_queries: int,
    num_keys: int,
    window: int | None = None,
    device: torch.device | str | None = None,
    num_prefix: int = 0,
) -> Bool[Tensor, " q k"]:
    """Boolean mask where query ``i`` (the last ``num_queries`` of ``num_keys`` positions) may see key ``j``.

    Allowed: ``j <= i``, and with a sliding window also ``i - j < window`` unless ``j < num_prefix`` (prefix tokens,
    e.g. Hymba's meta tokens, stay visible to every later query).
    """
    q_pos = torch.arange(num_keys - num_queries, num_keys, device=device)[:, None]  # (q, 1)
    k_pos = torch.arange(num_keys, device=device)[None, :]  # (1, k)
    mask = k_pos <= q_pos
    if window is not None:
        mask = mask & ((q_pos - k_pos < window) | (k_pos < num_prefix))
    return mask


class CausalMultiHeadSelfAttention(nn.Module):
    """Causal multi-head self-attention with optional RoPE, sliding window (prefix kept visible) and KV cache."""

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        positions: str = "rope",
        max_seq_len: int = 2048,
        theta: float = 10000.0,
        backend: str = "naive",
        window: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        num_prefix: int = 0,
        inner_dim: int | None = None,
        output_proj: bool = True,
        kv_proj: bool = True,
        keep_kv: bool = False,
        bias: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        inner = d_model if inner_dim is None else inner_dim
        if inner % num_heads:
            raise ValueError(f"attention width {inner} must be divisible by num_heads={num_heads}")
        if positions not in POSITIONS:
            raise ValueError(f"attention positions must be one of {POSITIONS}, got {positions!r}")
        if backend not in BACKENDS:
            raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
        if window is not None and window < 1:
            raise ValueError(f"sliding window must be a positive number of positions or None, got {window}")
        if num_prefix < 0:
            raise ValueError(f"num_prefix must be >= 0, got {num_prefix}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"attention dropout must be in [0, 1), got {dropout}")
        self.dropout = dropout
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, inner // num_heads
        self.inner_dim, self.backend, self.window, self.num_prefix = inner, backend, window, num_prefix
        self.keep_kv, self.last_kv = keep_kv, None
        factory = {"device": device, "dtype": dtype, "bias": bias}
        self.q_proj = Linear(d_model, inner, **factory)
        self.k_proj = Linear(d_model, inner, **factory) if kv_proj else None
        self.v_proj = Linear(d_model, inner, **factory) if kv_proj else None
        self.output_proj = Linear(inner, d_model, **factory) if output_proj else None
        self.rope = None
        if positions == "rope":
            self.rope = RotaryPositionalEmbedding(theta, self.head_dim, max_seq_len, device)

    def make_cache(self, batch_size: int, max_seq_len: int) -> KVCache:
        weight = self.q_proj.weight
        return KVCache(batch_size, self.num_heads, self.head_dim, max_seq_len, weight.device, weight.dtype)

    def forward(
        self,
        x: Float[Tensor, " ... seq d_model"],
        token_positions: Int[Tensor, " ... seq"] | None = None,
        cache: KVCache | None = None,
        shared_kv: tuple[Tensor, Tensor] | None = None,
    ) -> Float[Tensor, " ... seq d_model"]:
        """Attend causally; ``shared_kv`` (required without K/V projections) is another layer's ``last_kv``."""
        *lead, T, D = x.shape
        x = x.reshape(-1, T, D)  # (B, T, D)
        if self.k_proj is None and shared_kv is None:
            raise ValueError("this attention has no K/V projections; pass the producer layer's keys as shared_kv")
        past = cache.length if cache is not None else (shared_kv[0].shape[2] - T if shared_kv is not None else 0)
        q, k, v = self._project(x, past, token_positions)
        if shared_kv is not None:
            k, v = shared_kv  # (B, H, past + T, hd): already rotated and cached by the producer
        elif cache is not None:
            k, v = cache.append(k, v)  # (B, H, past + T, hd)
        if self.keep_kv:
            self.last_kv = (k, v)
        y = self._attend(q, k, v)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(*lead, T, self.inner_dim)  # (..., T, I)
        return self.output_proj(y) if self.output_proj is not None else y

    def _project(
        self, x: Float[Tensor, " b t d_model"], past: int, token_positions: Int[Tensor, " ... t"] | None
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Q, K and V ``(B, H, T, hd)`` of ``x``, rotated for positions ``past ..`` (or ``token_positions``) when
        RoPE is on; K and V are None without K/V projections."""
        B, T, _ = x.shape
        if self.k_proj is None:
            q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
            k = v = None
        else:
            qkv_weight = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))  # (3I, D)
            qkv = x @ qkv_weight.T  # (B, T, 3I)
            if self.q_proj.bias is not None:
                qkv = qkv + torch.cat((self.q_proj.bias, self.k_proj.bias, self.v_proj.bias))
            qkv = qkv.view(B, T, 3, self.num_heads, self.head_dim)  # (B, T, 3, H, hd)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, T, hd) each
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(past, past + T, device=x.device)  # (T,)
            else:
                token_positions = token_positions.reshape(-1, T)[:, None, :]  # (B or 1, 1, T): same for every head
            q = self.rope(q, token_positions)
            k = self.rope(k, token_positions) if k is not None else None
        return q, k, v

    @torch.no_grad()
    def attention_weights(
        self, x: Float[Tensor, " ... seq d_model"], shared_kv: tuple[Tensor, Tensor] | None = None
    ) -> Float[Tensor, " ... heads seq keys"]:
        """The attention probabilities this layer gives ``x`` (no cache), without dropout: ``(..., H, T, T)``, or
        ``(..., H, T, L)`` over the ``L`` keys of ``shared_kv``, whose last ``T`` positions ``x`` holds.

        For interpretability probes (which position each query reads); ``forward`` never materialises them on the
        ``torch_sdpa`` backend, so this recomputes them from the same projections, mask and softmax.
        """
        *lead, T, D = x.shape
        if self.k_proj is None and shared_kv is None:
            raise ValueError("this attention has no K/V projections; pass the producer layer's keys as shared_kv")
        past = shared_kv[0].shape[2] - T if shared_kv is not None else 0  # as in forward: x continues those keys
        q, k, _ = self._project(x.reshape(-1, T, D), past, None)
        if shared_kv is not None:
            k = shared_kv[0]  # (B, H, past + T, hd), as forward attends over them
        scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)  # (B, H, T, past + T)
        weights = masked_softmax(scores, causal_mask(T, k.shape[2], self.window, x.device, self.num_prefix), dim=-1)
        return weights.reshape(*lead, self.num_heads, T, k.shape[2])

    def _attend(
        self, q: Float[Tensor, " b h q d"], k: Float[Tensor, " b h k d"], v: Float[Tensor, " b h k d"]
    ) -> Float[Tensor, " b h q d"]:
        num_q, num_k = q.shape[2], k.shape[2]
        needs_mask = num_q > 1 or (self.window is not None and num_k > self.window)
        p = self.dropout if self.training else 0.0
        if self.backend == "torch_sdpa":
            if num_q == num_k and self.window is None:
                return torch_sdpa(q, k, v, is_causal=True, dropout_p=p)
            mask = causal_mask(num_q, num_k, self.window, q.device, self.num_prefix) if needs_mask else None
            return torch_sdpa(q, k, v, attn_mask=mask, dropout_p=p)
        mask = causal_mask(num_q, num_k, self.window, q.device, self.num_prefix) if needs_mask else None
        return scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
