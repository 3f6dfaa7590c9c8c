"""Specification of cs336_basics.nn.layers: Linear, Embedding, RMSNorm, SwiGLU, SiLUFFN.

Oracles: F.linear, F.embedding, F.rms_norm, F.silu written out in torch, and the closed-form init statistics.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.nn.layers import Embedding, Linear, RMSNorm, SiLUFFN, SwiGLU, default_swiglu_d_ff
from tests.adapters import run_embedding, run_linear, run_rmsnorm, run_swiglu


def test_linear_computes_x_times_weight_transposed_without_bias():
    weights, x = torch.randn(7, 5), torch.randn(2, 3, 5)
    torch.testing.assert_close(run_linear(5, 7, weights, x), F.linear(x, weights))


def test_linear_state_dict_holds_only_an_out_by_in_weight():
    state = Linear(5, 7).state_dict()
    assert list(state) == ["weight"] and state["weight"].shape == (7, 5)


def test_linear_init_is_truncated_normal_with_glorot_std():
    d_in, d_out = 300, 200
    weight = Linear(d_in, d_out).weight.detach()
    std = math.sqrt(2 / (d_in + d_out))
    assert weight.abs().max() <= 3 * std + 1e-6
    # a normal truncated at +-3 std has std 0.9866 * std; 60k samples pin it to ~0.3%
    assert weight.std().item() == pytest.approx(0.9866 * std, rel=0.02)


def test_linear_respects_device_and_dtype():
    layer = Linear(4, 3, device="cpu", dtype=torch.float64)
    assert layer.weight.dtype == torch.float64 and layer.weight.device.type == "cpu"


def test_embedding_looks_up_rows_for_any_index_shape():
    weights, ids = torch.randn(11, 4), torch.randint(0, 11, (2, 3, 5))
    torch.testing.assert_close(run_embedding(11, 4, weights, ids), F.embedding(ids, weights))


def test_embedding_init_is_truncated_standard_normal():
    weight = Embedding(1000, 64).weight.detach()
    assert weight.abs().max() <= 3.0
    assert weight.std().item() == pytest.approx(0.9866, rel=0.02)


def test_rmsnorm_matches_torch_rms_norm():
    weights, x = torch.randn(16), torch.randn(2, 5, 16)
    torch.testing.assert_close(run_rmsnorm(16, 1e-5, weights, x), F.rms_norm(x, (16,), weights, eps=1e-5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_rmsnorm_computes_in_float32_and_returns_the_input_dtype(dtype):
    """The float32 result rounded once to the input dtype: within one ulp of torch's, and equal in all but a few
    elements (a fused kernel may differ from ours in float32's last bit, which can flip a rounding). A norm computed
    in the input dtype differs in about half the elements in bf16 (all within bf16's default tolerance, hence the
    count), and in fp16 the squares of inputs of ~1e3 overflow."""
    weights, x = torch.randn(32), torch.randn(4, 32) * 1e3
    out = run_rmsnorm(32, 1e-5, weights, x.to(dtype))
    assert out.dtype == dtype
    expected = F.rms_norm(x.to(dtype).float(), (32,), weights, eps=1e-5).to(dtype)
    one_ulp = torch.finfo(dtype).eps  # 2^-10 for fp16, 2^-7 for bf16
    torch.testing.assert_close(out, expected, rtol=one_ulp, atol=1e-6)
    assert (out != expected).float().mean() < 0.02


def test_rmsnorm_gain_starts_at_one():
    assert torch.equal(RMSNorm(8).weight.detach(), torch.ones(8))


def test_swiglu_matches_its_formula():
    d_model, d_ff = 16, 48
    w1, w2, w3 = torch.randn(d_ff, d_model), torch.randn(d_model, d_ff), torch.randn(d_ff, d_model)
    x = torch.randn(2, 3, d_model)
    expected = F.linear(F.silu(F.linear(x, w1)) * F.linear(x, w3), w2)
    torch.testing.assert_close(run_swiglu(d_model, d_ff, w1, w2, w3, x), expected)


@pytest.mark.parametrize(("d_model", "d_ff"), [(64, 192), (512, 1408), (768, 2048), (100, 320)])
def test_swiglu_default_width_is_8_thirds_d_model_rounded_up_to_64(d_model, d_ff):
    assert default_swiglu_d_ff(d_model) == d_ff
    assert SwiGLU(d_model).w1.weight.shape == (d_ff, d_model)


def test_silu_ffn_matches_its_formula_and_defaults_to_swiglu_parameter_count():
    ffn = SiLUFFN(16)
    # SwiGLU(16) defaults to d_ff 64 (8/3 x 16 rounded up to 64): 3 x 16 x 64 parameters = 2 x 16 x 96.
    assert ffn.w1.weight.shape == (96, 16) and ffn.w2.weight.shape == (16, 96)
    assert sum(p.numel() for p in ffn.parameters()) == sum(p.numel() for p in SwiGLU(16).parameters())
    x = torch.randn(3, 16)
    expected = F.linear(F.silu(F.linear(x, ffn.w1.weight)), ffn.w2.weight)
    torch.testing.assert_close(ffn(x), expected)
