"""Matmul FLOPs per token of a Transformer (:func:`~cs336_basics.models.factory.transformer_lm`).

Counting convention: a matmul of ``(m, k) @ (k, n)`` costs ``2 m k n`` FLOPs (one multiply and one add per
term); element-wise work (norms, activations, softmax, RoPE, residual adds) is ignored, since it is a few percent
of the total at any realistic width. For one token in a sequence of ``seq_len`` positions, per layer:

==================  =====================================  ==============================
term                FLOPs per token                         what
==================  =====================================  ==============================
attention_proj      ``2 * 4 d^2``                          Q, K, V and output projections
attention_scores    ``2 * seq_len * d + 2 * seq_len * d``  ``Q K^T`` and ``softmax(.) V`` over all heads
ffn (SwiGLU)        ``2 * 3 d d_ff``                       w1, w3 and w2
ffn (SiLU)          ``2 * 2 d d_ff``                       w1 and w2
==================  =====================================  ==============================

plus ``lm_head = 2 d vocab`` once. Attention is counted over the full ``seq_len x seq_len`` score matrix, which is
what a masked (non-skipping) implementation computes; a causal kernel that skips masked blocks does about half.
The embedding lookup is free. ``training = 3 * forward`` (the backward pass costs two matmuls per forward matmul:
one for the input gradient, one for the weight gradient), as in Kaplan et al. (2020), where
``forward ~= 2 N + 2 n_layer seq_len d`` for ``N`` non-embedding parameters.
"""

from __future__ import annotations

from cs336_basics.models.ffn import default_d_ff


def transformer_flops_per_token(
    d_model: int,
    num_layers: int,
    seq_len: int,
    vocab_size: int,
    d_ff: int | None = None,
    ffn: str = "swiglu",
) -> dict[str, int]:
    """FLOPs per token by term (summed over layers), plus ``forward`` and ``training`` (= 3x forward) totals."""
    if min(d_model, num_layers, seq_len, vocab_size) < 1:
        raise ValueError("d_model, num_layers, seq_len and vocab_size must all be positive")
    d_ff = default_d_ff(d_model, ffn) if d_ff is None else d_ff
    ffn_matrices = 3 if ffn == "swiglu" else 2
    terms = {
        "attention_proj": num_layers * 2 * 4 * d_model * d_model,
        "attention_scores": num_layers * 2 * 2 * seq_len * d_model,
        "ffn": num_layers * 2 * ffn_matrices * d_model * d_ff,
        "lm_head": 2 * d_model * vocab_size,
    }
    terms["forward"] = sum(terms.values())
    terms["training"] = 3 * terms["forward"]
    return terms
