"""Glue between the test suite and the library, following the CS336 assignment-1 adapter interface.

Glue only: each adapter builds a module from the library, loads the given weights and calls it. It imports only
from ``cs336_basics`` / ``kernels`` (and the standard library, numpy, torch, jaxtyping), never from other files
under ``tests/``, so it can be dropped into another ``tests/`` folder. The contract is ``docs/ADAPTERS.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import IO, Any, BinaryIO

import numpy.typing as npt
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


def run_linear(
    d_in: int,
    d_out: int,
    weights: Float[Tensor, " d_out d_in"],
    in_features: Float[Tensor, " ... d_in"],
) -> Float[Tensor, " ... d_out"]:
    from cs336_basics.nn.layers import Linear

    layer = Linear(d_in, d_out, device=weights.device, dtype=weights.dtype)
    layer.load_state_dict({"weight": weights})
    return layer(in_features)


def run_embedding(
    vocab_size: int,
    d_model: int,
    weights: Float[Tensor, " vocab_size d_model"],
    token_ids: Int[Tensor, " ..."],
) -> Float[Tensor, " ... d_model"]:
    from cs336_basics.nn.layers import Embedding

    layer = Embedding(vocab_size, d_model, device=weights.device, dtype=weights.dtype)
    layer.load_state_dict({"weight": weights})
    return layer(token_ids)


def run_swiglu(
    d_model: int,
    d_ff: int,
    w1_weight: Float[Tensor, " d_ff d_model"],
    w2_weight: Float[Tensor, " d_model d_ff"],
    w3_weight: Float[Tensor, " d_ff d_model"],
    in_features: Float[Tensor, " ... d_model"],
) -> Float[Tensor, " ... d_model"]:
    from cs336_basics.nn.layers import SwiGLU

    layer = SwiGLU(d_model, d_ff, device=w1_weight.device, dtype=w1_weight.dtype)
    layer.load_state_dict({"w1.weight": w1_weight, "w2.weight": w2_weight, "w3.weight": w3_weight})
    return layer(in_features)


def run_scaled_dot_product_attention(
    Q: Float[Tensor, " ... queries d_k"],
    K: Float[Tensor, " ... keys d_k"],
    V: Float[Tensor, " ... keys d_v"],
    mask: Bool[Tensor, " ... queries keys"] | None = None,
) -> Float[Tensor, " ... queries d_v"]:
    from cs336_basics.nn.attention import scaled_dot_product_attention

    return scaled_dot_product_attention(Q, K, V, mask)


def _attention_state(q, k, v, o) -> dict[str, Tensor]:
    return {"q_proj.weight": q, "k_proj.weight": k, "v_proj.weight": v, "output_proj.weight": o}


def run_multihead_self_attention(
    d_model: int,
    num_heads: int,
    q_proj_weight: Float[Tensor, " d_k d_in"],
    k_proj_weight: Float[Tensor, " d_k d_in"],
    v_proj_weight: Float[Tensor, " d_v d_in"],
    o_proj_weight: Float[Tensor, " d_model d_v"],
    in_features: Float[Tensor, " ... sequence_length d_in"],
) -> Float[Tensor, " ... sequence_length d_out"]:
    from cs336_basics.nn.attention import CausalMultiHeadSelfAttention

    layer = CausalMultiHeadSelfAttention(d_model, num_heads, positions="none")
    layer.load_state_dict(_attention_state(q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight))
    return layer(in_features)


def run_multihead_self_attention_with_rope(
    d_model: int,
    num_heads: int,
    max_seq_len: int,
    theta: float,
    q_proj_weight: Float[Tensor, " d_k d_in"],
    k_proj_weight: Float[Tensor, " d_k d_in"],
    v_proj_weight: Float[Tensor, " d_v d_in"],
    o_proj_weight: Float[Tensor, " d_model d_v"],
    in_features: Float[Tensor, " ... sequence_length d_in"],
    token_positions: Int[Tensor, " ... sequence_length"] | None = None,
) -> Float[Tensor, " ... sequence_length d_out"]:
    from cs336_basics.nn.attention import CausalMultiHeadSelfAttention

    layer = CausalMultiHeadSelfAttention(d_model, num_heads, positions="rope", max_seq_len=max_seq_len, theta=theta)
    layer.load_state_dict(_attention_state(q_proj_weight, k_proj_weight, v_proj_weight, o_proj_weight))
    return layer(in_features, token_positions=token_positions)


def run_rope(
    d_k: int,
    theta: float,
    max_seq_len: int,
    in_query_or_key: Float[Tensor, " ... sequence_length d_k"],
    token_positions: Int[Tensor, " ... sequence_length"],
) -> Float[Tensor, " ... sequence_length d_k"]:
    from cs336_basics.nn.attention import RotaryPositionalEmbedding

    rope = RotaryPositionalEmbedding(theta, d_k, max_seq_len, device=in_query_or_key.device)
    return rope(in_query_or_key, token_positions)


def run_transformer_block(
    d_model: int,
    num_heads: int,
    d_ff: int,
    max_seq_len: int,
    theta: float,
    weights: dict[str, Tensor],
    in_features: Float[Tensor, " batch sequence_length d_model"],
) -> Float[Tensor, " batch sequence_length d_model"]:
    from cs336_basics.models.transformer import TransformerBlock

    block = TransformerBlock.standalone(d_model, num_heads, d_ff, max_seq_len=max_seq_len, theta=theta)
    block.load_state_dict(weights)
    return block(in_features)


def run_transformer_lm(
    vocab_size: int,
    context_length: int,
    d_model: int,
    num_layers: int,
    num_heads: int,
    d_ff: int,
    rope_theta: float,
    weights: dict[str, Tensor],
    in_indices: Int[Tensor, " batch_size sequence_length"],
) -> Float[Tensor, " batch_size sequence_length vocab_size"]:
    from cs336_basics.models.factory import transformer_lm

    model = transformer_lm(vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta=rope_theta)
    model.load_state_dict(weights)
    return model(in_indices)


def run_rmsnorm(
    d_model: int,
    eps: float,
    weights: Float[Tensor, " d_model"],
    in_features: Float[Tensor, " ... d_model"],
) -> Float[Tensor, " ... d_model"]:
    from cs336_basics.nn.layers import RMSNorm

    norm = RMSNorm(d_model, eps=eps, device=weights.device)
    norm.load_state_dict({"weight": weights})
    return norm(in_features)


def run_silu(in_features: Float[Tensor, " ..."]) -> Float[Tensor, " ..."]:
    from cs336_basics.nn.functional import silu

    return silu(in_features)


def run_get_batch(dataset: npt.NDArray, batch_size: int, context_length: int, device: str) -> tuple[Tensor, Tensor]:
    from cs336_basics.data.batching import get_batch

    return get_batch(dataset, batch_size, context_length, device)


def run_softmax(in_features: Float[Tensor, " ..."], dim: int) -> Float[Tensor, " ..."]:
    from cs336_basics.nn.functional import softmax

    return softmax(in_features, dim=dim)


def run_cross_entropy(
    inputs: Float[Tensor, " batch_size vocab_size"], targets: Int[Tensor, " batch_size"]
) -> Float[Tensor, ""]:
    from cs336_basics.nn.functional import cross_entropy

    return cross_entropy(inputs, targets)


def run_gradient_clipping(parameters: Iterable[torch.nn.Parameter], max_l2_norm: float) -> None:
    from cs336_basics.optim.clipping import clip_gradients

    clip_gradients(parameters, max_l2_norm)


def get_adamw_cls() -> type[torch.optim.Optimizer]:
    from cs336_basics.optim.adamw import AdamW

    return AdamW


def run_get_lr_cosine_schedule(
    it: int,
    max_learning_rate: float,
    min_learning_rate: float,
    warmup_iters: int,
    cosine_cycle_iters: int,
) -> float:
    from cs336_basics.optim.schedules import cosine_with_warmup

    return cosine_with_warmup(it, max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters)


def run_save_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    iteration: int,
    out: str | os.PathLike | BinaryIO | IO[bytes],
) -> None:
    from cs336_basics.training.checkpoint import save_checkpoint

    save_checkpoint(model, optimizer, iteration, out)


def run_load_checkpoint(
    src: str | os.PathLike | BinaryIO | IO[bytes],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> int:
    from cs336_basics.training.checkpoint import load_checkpoint

    return load_checkpoint(src, model, optimizer)


def get_tokenizer(
    vocab: dict[int, bytes],
    merges: list[tuple[bytes, bytes]],
    special_tokens: list[str] | None = None,
) -> Any:
    from cs336_basics.tokenizer.tokenizer import Tokenizer

    return Tokenizer(vocab, merges, special_tokens)


def run_train_bpe(
    input_path: str | os.PathLike,
    vocab_size: int,
    special_tokens: list[str],
    **kwargs: Any,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    from cs336_basics.tokenizer.bpe_train import train_bpe

    return train_bpe(input_path, vocab_size, special_tokens, **kwargs)


def run_selective_scan(
    u: Float[Tensor, " b d L"],
    delta: Float[Tensor, " b d L"],
    A: Float[Tensor, " d n"],
    B: Float[Tensor, " b n L"],
    C: Float[Tensor, " b n L"],
    D: Float[Tensor, " d"] | None = None,
    z: Float[Tensor, " b d L"] | None = None,
    delta_bias: Float[Tensor, " d"] | None = None,
    delta_softplus: bool = False,
    backend: str = "auto",
) -> Float[Tensor, " b d L"]:
    from kernels.selective_scan import selective_scan

    return selective_scan(
        u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus, backend=backend
    )


def run_mamba_lm(
    vocab_size: int,
    d_model: int,
    num_layers: int,
    d_state: int,
    d_conv: int,
    expand: int,
    weights: dict[str, Tensor],
    in_indices: Int[Tensor, " batch_size sequence_length"],
) -> Float[Tensor, " batch_size sequence_length vocab_size"]:
    from cs336_basics.models.factory import mamba_lm

    model = mamba_lm(vocab_size, d_model, num_layers, d_state=d_state, d_conv=d_conv, expand=expand)
    model.load_state_dict(weights)
    return model(in_indices)


def run_hybrid_lm(
    vocab_size: int,
    context_length: int,
    d_model: int,
    num_heads: int,
    d_ff: int,
    d_state: int,
    pattern: str,
    rope_theta: float,
    weights: dict[str, Tensor] | None,
    in_indices: Int[Tensor, " batch_size sequence_length"],
) -> Float[Tensor, " batch_size sequence_length vocab_size"]:
    from cs336_basics.models.factory import hybrid_lm

    if weights is None:
        torch.manual_seed(0)
    model = hybrid_lm(
        vocab_size, context_length, d_model, num_heads, d_ff, d_state=d_state, pattern=pattern, rope_theta=rope_theta
    )
    if weights is not None:
        model.load_state_dict(weights)
    return model(in_indices)
