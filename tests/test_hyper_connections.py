"""Specification of mHC hyper-connections: Sinkhorn projection, residual-equivalent start, live gradients."""

import pytest
import torch

from cs336_basics.models.base import parameter_groups
from cs336_basics.models.hyper_connections import (
    HyperConnection,
    collapse_streams,
    expand_streams,
    mhc_stability_gain,
    sinkhorn,
)
from cs336_basics.nn.layers import RMSNorm, SwiGLU


class _NormFFN(torch.nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = RMSNorm(d)
        self.ffn = SwiGLU(d, 16)

    def forward(self, x):
        return self.ffn(self.norm(x))


def test_sinkhorn_output_is_doubly_stochastic_within_1e_4():
    logits = torch.randn(5, 4, 4)  # unit scale, as learned mixing logits are; larger scales need more iterations
    p = sinkhorn(logits, num_iters=30)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(5, 4), atol=1e-4, rtol=0)
    torch.testing.assert_close(p.sum(-2), torch.ones(5, 4), atol=1e-4, rtol=0)


def test_sinkhorn_of_constant_logits_is_uniform():
    torch.testing.assert_close(sinkhorn(torch.zeros(3, 3)), torch.full((3, 3), 1 / 3))


@pytest.mark.parametrize("n_streams", [2, 3, 4])
def test_wrapped_stack_starts_as_standard_residual_network(n_streams):
    branches = [_NormFFN(8) for _ in range(3)]
    wrapped = [HyperConnection(b, n_streams=n_streams) for b in branches]
    h = torch.randn(2, 5, 8)
    streams = expand_streams(h, n_streams)
    for layer in wrapped:
        streams = layer(streams)
        h = h + layer.branch(h)
    torch.testing.assert_close(collapse_streams(streams), h, rtol=5e-3, atol=5e-3)


def test_initial_residual_mixing_is_near_but_not_exactly_identity():
    h_res = HyperConnection(_NormFFN(8), n_streams=4).mixing()[2]
    off_diagonal = h_res[~torch.eye(4, dtype=torch.bool)]
    assert (off_diagonal > 0).all()
    assert off_diagonal.max() < 5e-3


def _mixing_grads(layers, n_streams):
    streams = expand_streams(torch.randn(2, 5, 8), n_streams)
    for layer in layers:
        streams = layer(streams)
    collapse_streams(streams).square().sum().backward()
    return [(p.grad, name) for layer in layers for name, p in layer.named_parameters() if "logits" in name]


def test_every_mixing_parameter_gets_nonzero_gradient_after_one_backward():
    layers = [HyperConnection(_NormFFN(8), n_streams=4) for _ in range(3)]
    for grad, name in _mixing_grads(layers, 4):
        assert grad is not None and grad.abs().max() > 1e-8, name


def test_saturated_identity_init_gives_dead_residual_gradient():
    """The failure mode the init avoids: huge logits make Sinkhorn the exact identity, whose gradient is zero."""
    layers = [HyperConnection(_NormFFN(8), n_streams=4, residual_logit=200.0) for _ in range(2)]
    res_grads = [g for g, name in _mixing_grads(layers, 4) if name == "res_logits"]
    assert all(g.abs().max() == 0 for g in res_grads)


def test_branch_arguments_are_passed_through():
    class Scale(torch.nn.Module):
        def forward(self, x, factor):
            return x * factor

    layer = HyperConnection(Scale(), n_streams=2)
    streams = expand_streams(torch.ones(1, 3), 2)
    out_small, out_big = layer(streams, factor=0.0), layer(streams, factor=1.0)
    assert not torch.allclose(out_small, out_big)


def test_stability_gain_of_doubly_stochastic_product_is_one():
    layers = [HyperConnection(_NormFFN(8), n_streams=4) for _ in range(6)]
    with torch.no_grad():
        for layer in layers:
            layer.res_logits.normal_()
            layer.sinkhorn_iters = 200
    assert mhc_stability_gain(layers) == pytest.approx(1.0, abs=1e-4)


def test_invalid_stream_count_is_value_error():
    with pytest.raises(ValueError, match="n_streams"):
        HyperConnection(_NormFFN(8), n_streams=0)


def test_residual_mixing_logits_are_excluded_from_weight_decay():
    """Decay would pull R = 6 I towards 0, i.e. H_res towards uniform averaging of the streams."""
    layer = HyperConnection(_NormFFN(8), n_streams=4)
    decay, no_decay = (group["params"] for group in parameter_groups(layer, weight_decay=0.1))
    assert any(p is layer.res_logits for p in no_decay)
    assert not any(p is layer.res_logits for p in decay)
    branch_matrices = {id(p) for name, p in layer.branch.named_parameters() if name.endswith(".weight") and p.ndim == 2}
    assert {id(p) for p in decay} == branch_matrices
