"""Specification of cs336_basics.nn.attention: SDPA, RoPE, causal multi-head self-attention and its KV cache.

Oracles: F.scaled_dot_product_attention, a complex-number RoPE written here, a torch-native multi-head attention
written here with nn.functional, and the closed-form properties of rotations.
"""

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.nn.attention import CausalMultiHeadSelfAttention, RotaryPositionalEmbedding, causal_mask
from tests.adapters import (
    run_multihead_self_attention,
    run_multihead_self_attention_with_rope,
    run_rope,
    run_scaled_dot_product_attention,
)


def complex_rope(x: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE as multiplication of adjacent-pair complex numbers by exp(i * position * freq): (..., seq, d_k)."""
    d_k = x.shape[-1]
    freqs = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64) / d_k)  # (d_k/2,)
    rotation = torch.polar(torch.ones(()), (positions[..., None].double() * freqs).float())  # (..., seq, d_k/2)
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], d_k // 2, 2).contiguous())
    return torch.view_as_real(pairs * rotation).flatten(-2)


def torch_mha(x, weights, num_heads, theta=None, positions=None, window=None):
    """Causal multi-head attention from nn.functional pieces, the independent oracle: (B, T, D) -> (B, T, D)."""
    B, T, D = x.shape
    split = lambda t: t.view(B, T, num_heads, D // num_heads).transpose(1, 2)  # (B, H, T, hd)
    q, k, v = (split(F.linear(x, weights[f"{n}_proj.weight"])) for n in "qkv")
    if theta is not None:
        positions = torch.arange(T) if positions is None else positions
        q, k = complex_rope(q, positions, theta), complex_rope(k, positions, theta)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    if window is not None:
        mask &= ~torch.ones(T, T, dtype=torch.bool).tril(-window)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return F.linear(y.transpose(1, 2).reshape(B, T, D), weights["output_proj.weight"])


def random_attention_weights(d_model: int) -> dict[str, torch.Tensor]:
    return {f"{n}_proj.weight": torch.randn(d_model, d_model) / d_model**0.5 for n in ("q", "k", "v", "output")}


def test_sdpa_matches_torch_with_a_mask():
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 7, 8), torch.randn(2, 7, 3)
    mask = torch.rand(2, 5, 7) > 0.3
    mask[..., 0] = True  # every query sees at least one key
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(run_scaled_dot_product_attention(q, k, v, mask), expected)


def test_sdpa_handles_4d_leading_dims():
    q, k, v = torch.randn(2, 3, 4, 5, 8), torch.randn(2, 3, 4, 6, 8), torch.randn(2, 3, 4, 6, 8)
    mask = torch.rand(2, 3, 4, 5, 6) > 0.5
    mask[..., 0] = True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(run_scaled_dot_product_attention(q, k, v, mask), expected)


def test_sdpa_without_mask_matches_torch():
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 6, 8), torch.randn(3, 6, 8)
    torch.testing.assert_close(run_scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, v))


def test_rope_matches_complex_rotation():
    x, positions = torch.randn(2, 6, 16), torch.tensor([[0, 1, 2, 3, 4, 5], [7, 3, 9, 0, 31, 2]])
    torch.testing.assert_close(run_rope(16, 10000.0, 32, x, positions), complex_rope(x, positions, 10000.0))


def test_rope_preserves_norms():
    x, positions = torch.randn(3, 10, 32), torch.randint(0, 64, (3, 10))
    torch.testing.assert_close(run_rope(32, 500.0, 64, x, positions).norm(dim=-1), x.norm(dim=-1))


def test_rope_dot_products_depend_only_on_relative_position():
    rope = RotaryPositionalEmbedding(10000.0, 16, 128)
    q, k = torch.randn(16), torch.randn(16)

    def score(m: int, n: int) -> torch.Tensor:
        return rope(q[None], torch.tensor([m])) @ rope(k[None], torch.tensor([n]))[0]

    torch.testing.assert_close(score(5, 2), score(103, 100), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(score(5, 2), score(5, 3), atol=1e-3)


def test_rope_at_position_zero_is_the_identity():
    x = torch.randn(4, 8)
    torch.testing.assert_close(run_rope(8, 10000.0, 16, x, torch.zeros(4, dtype=torch.long)), x)


def test_rope_tables_are_not_in_the_state_dict():
    assert len(RotaryPositionalEmbedding(10000.0, 8, 16).state_dict()) == 0


def test_mha_matches_torch_native_attention():
    weights, x = random_attention_weights(32), torch.randn(2, 7, 32)
    out = run_multihead_self_attention(32, 4, *weights.values(), x)
    torch.testing.assert_close(out, torch_mha(x, weights, 4), rtol=1e-4, atol=1e-5)


def test_mha_with_rope_matches_torch_native_attention():
    weights, x = random_attention_weights(32), torch.randn(2, 7, 32)
    out = run_multihead_self_attention_with_rope(32, 4, 16, 10000.0, *weights.values(), x)
    torch.testing.assert_close(out, torch_mha(x, weights, 4, theta=10000.0), rtol=1e-4, atol=1e-5)


def test_mha_with_rope_uses_the_given_token_positions_and_extra_leading_dims():
    weights, x = random_attention_weights(16), torch.randn(3, 5, 16)
    positions = torch.tensor([4, 5, 6, 10, 11])
    out = run_multihead_self_attention_with_rope(16, 2, 16, 100.0, *weights.values(), x[None], positions[None])
    expected = torch_mha(x, weights, 2, theta=100.0, positions=positions)
    torch.testing.assert_close(out[0], expected, rtol=1e-4, atol=1e-5)


def test_mha_state_dict_keys_are_the_adapter_layout():
    keys = set(CausalMultiHeadSelfAttention(16, 2).state_dict())
    assert keys == {"q_proj.weight", "k_proj.weight", "v_proj.weight", "output_proj.weight"}


@pytest.mark.parametrize("window", [1, 3])
def test_sliding_window_attention_matches_a_banded_mask(window):
    weights, x = random_attention_weights(16), torch.randn(2, 8, 16)
    attn = CausalMultiHeadSelfAttention(16, 2, positions="none", window=window)
    attn.load_state_dict(weights)
    torch.testing.assert_close(attn(x), torch_mha(x, weights, 2, window=window), rtol=1e-4, atol=1e-5)


def expected_sdpa_calls(backend: str, forwards: int) -> int:
    """How many fused-kernel calls ``forwards`` forward passes of one attention layer on ``backend`` make."""
    return forwards if backend == "torch_sdpa" else 0


def test_causal_mask_for_the_last_queries_of_a_longer_sequence():
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, 4), expected)
    assert torch.equal(causal_mask(2, 4, window=2), torch.tensor([[0, 1, 1, 0], [0, 0, 1, 1]], dtype=torch.bool))


@pytest.mark.parametrize("window", [None, 3])
def test_torch_sdpa_backend_matches_naive(window, sdpa_calls):
    naive = CausalMultiHeadSelfAttention(32, 4, max_seq_len=16, window=window)
    fused = CausalMultiHeadSelfAttention(32, 4, max_seq_len=16, window=window, backend="torch_sdpa")
    fused.load_state_dict(naive.state_dict())
    x = torch.randn(2, 9, 32)
    y_naive = naive(x)
    assert len(sdpa_calls) == 0  # the naive layer never reaches the fused kernel
    y_fused = fused(x)
    assert len(sdpa_calls) == 1  # and the torch_sdpa one does, so the comparison below is of two different paths
    torch.testing.assert_close(y_fused, y_naive, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("backend", "window"), [("naive", None), ("torch_sdpa", None), ("naive", 2)])
def test_kv_cache_gives_the_same_outputs_as_one_full_pass(backend, window, sdpa_calls):
    attn = CausalMultiHeadSelfAttention(32, 4, max_seq_len=16, backend=backend, window=window)
    x = torch.randn(2, 10, 32)
    cache = attn.make_cache(batch_size=2, max_seq_len=10)
    chunks = [attn(x[:, :4], cache=cache)] + [attn(x[:, t : t + 1], cache=cache) for t in range(4, 10)]
    assert len(sdpa_calls) == expected_sdpa_calls(backend, 7)  # the prefill and each cached step
    torch.testing.assert_close(torch.cat(chunks, dim=1), attn(x), rtol=1e-4, atol=1e-5)
    assert cache.length == 10
    assert len(sdpa_calls) == expected_sdpa_calls(backend, 8)  # and the full pass


def test_kv_cache_overflow_is_a_clear_error():
    attn = CausalMultiHeadSelfAttention(16, 2)
    cache = attn.make_cache(batch_size=1, max_seq_len=3)
    with pytest.raises(ValueError, match="overflow"):
        attn(torch.randn(1, 4, 16), cache=cache)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_heads": 3}, "divisible"),
        ({"positions": "alibi"}, "positions"),
        ({"backend": "flash"}, "backend"),
        ({"window": 0}, "window"),
    ],
)
def test_attention_rejects_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CausalMultiHeadSelfAttention(**{"d_model": 16, "num_heads": 2, **kwargs})


def test_sdpa_gradients_match_torch():
    q, k, v = (torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    ours = torch.autograd.grad(run_scaled_dot_product_attention(q, k, v, mask).square().sum(), (q, k, v))
    expected = torch.autograd.grad(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).square().sum(), (q, k, v))
    for grad, reference in zip(ours, expected, strict=True):
        torch.testing.assert_close(grad, reference)


# Hand-written: 10 positions, 2 meta (prefix) tokens, window 4. Row i = query i; every query sees keys 0 and 1 (the
# meta tokens) and its window i-3..i; e.g. query 9 sees 0, 1, 6, 7, 8, 9 (with the plain window it saw none of 0, 1).
PREFIX_WINDOW_MASK = torch.tensor(
    [
        [1, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 0, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 0, 0, 1, 1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0, 1, 1, 1, 1, 0],
        [1, 1, 0, 0, 0, 0, 1, 1, 1, 1],
    ],
    dtype=torch.bool,
)


def test_sliding_window_keeps_the_prefix_tokens_visible_hand_computed():
    assert torch.equal(causal_mask(10, 10, window=4, num_prefix=2), PREFIX_WINDOW_MASK)
    for queries in (1, 3):  # the rows a cached decoding step builds: the last queries of the sequence
        assert torch.equal(causal_mask(queries, 10, window=4, num_prefix=2), PREFIX_WINDOW_MASK[-queries:])
    assert torch.equal(causal_mask(10, 10, num_prefix=2), torch.ones(10, 10, dtype=torch.bool).tril())  # no window


@pytest.mark.parametrize("backend", ["naive", "torch_sdpa"])
def test_prefix_window_attention_matches_torch_with_the_hand_mask(backend, sdpa_calls):
    weights, x = random_attention_weights(16), torch.randn(2, 10, 16)
    attn = CausalMultiHeadSelfAttention(16, 2, positions="none", window=4, num_prefix=2, backend=backend)
    attn.load_state_dict(weights)
    split = lambda t: t.view(2, 10, 2, 8).transpose(1, 2)  # (B, H, T, hd)
    q, k, v = (split(F.linear(x, weights[f"{n}_proj.weight"])) for n in "qkv")
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=PREFIX_WINDOW_MASK)  # the oracle: F's, not the spied alias
    expected = F.linear(y.transpose(1, 2).reshape(2, 10, 16), weights["output_proj.weight"])
    torch.testing.assert_close(attn(x), expected, rtol=1e-4, atol=1e-5)
    assert len(sdpa_calls) == expected_sdpa_calls(backend, 1)


@pytest.mark.parametrize("backend", ["naive", "torch_sdpa"])
def test_kv_cache_with_prefix_and_window_equals_the_full_pass(backend, sdpa_calls):
    attn = CausalMultiHeadSelfAttention(32, 4, max_seq_len=16, backend=backend, window=4, num_prefix=2)
    x = torch.randn(2, 12, 32)
    cache = attn.make_cache(batch_size=2, max_seq_len=12)
    chunks = [attn(x[:, :3], cache=cache)] + [attn(x[:, t : t + 1], cache=cache) for t in range(3, 12)]
    assert len(sdpa_calls) == expected_sdpa_calls(backend, 10)  # the prefill and each cached step
    torch.testing.assert_close(torch.cat(chunks, dim=1), attn(x), rtol=1e-4, atol=1e-5)
    assert len(sdpa_calls) == expected_sdpa_calls(backend, 11)  # and the full pass


def test_attention_without_output_projection_and_with_shared_keys():
    """Hymba's options: an inner width, no output projection, and a consumer that reuses a producer's keys."""
    producer = CausalMultiHeadSelfAttention(8, 2, max_seq_len=16, inner_dim=12, output_proj=False, keep_kv=True)
    consumer = CausalMultiHeadSelfAttention(8, 2, max_seq_len=16, inner_dim=12, output_proj=False, kv_proj=False)
    assert set(producer.state_dict()) == {"q_proj.weight", "k_proj.weight", "v_proj.weight"}
    assert set(consumer.state_dict()) == {"q_proj.weight"}
    x, h = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    assert producer(x).shape == (2, 6, 12)
    k, v = producer.last_kv  # post-RoPE keys and values, (B, H, T, hd)
    q = consumer.rope(F.linear(h, consumer.q_proj.weight).view(2, 6, 2, 6).transpose(1, 2), torch.arange(6))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(2, 6, 12)
    torch.testing.assert_close(consumer(h, shared_kv=(k, v)), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="shared_kv"):
        consumer(h)


@pytest.mark.parametrize("backend", ["naive", "torch_sdpa"])
def test_attention_weights_are_the_probabilities_the_forward_pass_uses(backend, sdpa_calls):
    """Oracle: the torch-native probabilities softmax(QK^T/sqrt(d) + mask) with RoPE, a window and a visible prefix;
    and mixing V with them, then the output projection, reproduces the layer's own output."""
    attn = CausalMultiHeadSelfAttention(16, 2, max_seq_len=16, window=4, num_prefix=2, backend=backend, bias=True)
    with torch.no_grad():
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.output_proj):
            proj.bias.normal_()
    attn.eval()
    x = torch.randn(3, 10, 16)
    probs = attn.attention_weights(x)  # (B, H, T, T)
    split = lambda t: t.view(3, 10, 2, 8).transpose(1, 2)  # (B, H, T, hd)
    q, k, v = (split(F.linear(x, getattr(attn, f"{n}_proj").weight, getattr(attn, f"{n}_proj").bias)) for n in "qkv")
    q, k = complex_rope(q, torch.arange(10), 10000.0), complex_rope(k, torch.arange(10), 10000.0)
    scores = (q @ k.transpose(-2, -1)) / 8**0.5
    expected = torch.softmax(scores.masked_fill(~PREFIX_WINDOW_MASK, float("-inf")), dim=-1)
    torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-6)
    mixed = (probs @ v).transpose(1, 2).reshape(3, 10, 16)
    torch.testing.assert_close(attn.output_proj(mixed), attn(x), rtol=1e-4, atol=1e-5)
    assert len(sdpa_calls) == expected_sdpa_calls(backend, 1)  # the forward pass above, on the backend named
    assert attn.attention_weights(x[0]).shape == (2, 10, 10)  # unbatched input keeps its leading shape
    assert len(sdpa_calls) == expected_sdpa_calls(backend, 1)  # attention_weights recomputes without the kernel


def test_attention_weights_of_a_layer_that_reads_shared_keys():
    producer = CausalMultiHeadSelfAttention(8, 2, max_seq_len=16, inner_dim=12, output_proj=False, keep_kv=True)
    consumer = CausalMultiHeadSelfAttention(8, 2, max_seq_len=16, inner_dim=12, output_proj=False, kv_proj=False)
    x, h = torch.randn(2, 6, 8), torch.randn(2, 6, 8)
    producer(x)
    k, v = producer.last_kv
    probs = consumer.attention_weights(h, shared_kv=(k, v))
    torch.testing.assert_close((probs @ v).transpose(1, 2).reshape(2, 6, 12), consumer(h, shared_kv=(k, v)))
    with pytest.raises(ValueError, match="shared_kv"):
        consumer.attention_weights(h)
    # the last 2 positions against all 6 shared keys: queries rotated for positions 4 and 5, as forward does; a layer
    # with its own K/V projections also attends over the shared keys when given them
    own = CausalMultiHeadSelfAttention(8, 2, max_seq_len=16, inner_dim=12, output_proj=False)
    for layer in (consumer, own):
        probs = layer.attention_weights(h[:, 4:], shared_kv=(k, v))
        assert probs.shape == (2, 2, 2, 6)
        mixed = (probs @ v).transpose(1, 2).reshape(2, 2, 12)
        torch.testing.assert_close(mixed, layer(h[:, 4:], shared_kv=(k, v)), rtol=1e-4, atol=1e-5)
