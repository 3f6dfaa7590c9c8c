"""Specification of mHC hyper-connections: Sinkhorn projection, residual-equivalent start, live gradients."""

import math

import pytest
import torch

from cs336_basics.models.base import parameter_groups
from cs336_basics.models.factory import hybrid_lm
from cs336_basics.models.hyper_connections import (
    HyperConnection,
    collapse_streams,
    expand_streams,
    mhc_stability_gain,
    sinkhorn,
)
from cs336_basics.nn.layers import RMSNorm, SwiGLU
from cs336_basics.optim.adamw import AdamW
from cs336_basics.optim.schedules import apply_learning_rate


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
    layers = [HyperConnection(_NormFFN(8), n_streams=4, residual_logit=200.0, sinkhorn_tol=None) for _ in range(2)]
    res_grads = [g for g, name in _mixing_grads(layers, 4) if name == "res_logits"]
    assert all(g.abs().max() == 0 for g in res_grads)
    # Solved to a tolerance, the projection is the same locally constant identity: its gradient is rounding noise.
    layers = [HyperConnection(_NormFFN(8), n_streams=4, residual_logit=200.0, sinkhorn_tol=1e-6) for _ in range(2)]
    res_grads = [g for g, name in _mixing_grads(layers, 4) if name == "res_logits"]
    assert all(g.abs().max() < 1e-12 for g in res_grads)


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


# ----- Sinkhorn solved to a tolerance ---------------------------------------------------------------------------------


def _logits_of_spread(count: int, n: int, spread: float, generator: torch.Generator) -> torch.Tensor:
    """Random logits whose max - min is exactly ``spread``, plus the structured hard cases of that spread."""
    u = torch.rand(count, n, n, generator=generator)
    lo, hi = u.amin((-1, -2), keepdim=True), u.amax((-1, -2), keepdim=True)
    random = (u - lo) / (hi - lo) * spread
    upper = torch.triu(torch.full((n, n), float(spread)))  # near-triangular limits converge slowest for Sinkhorn
    eye = spread * torch.eye(n)
    return torch.cat([random, torch.stack([upper, -upper, eye, -eye])])


def _unrolled_float64(logits: torch.Tensor, num_iters: int) -> torch.Tensor:
    """Plain alternating row/column normalisation in float64, differentiated by autograd: an independent oracle."""
    log_p = logits.double()
    for _ in range(num_iters):
        log_p = log_p - torch.logsumexp(log_p, dim=-1, keepdim=True)
        log_p = log_p - torch.logsumexp(log_p, dim=-2, keepdim=True)
    return log_p.exp()


def _max_marginal_error(p: torch.Tensor) -> float:
    return max(float((p.sum(-1) - 1).abs().max()), float((p.sum(-2) - 1).abs().max()))


@pytest.mark.parametrize("n", range(2, 9))
def test_sinkhorn_to_tolerance_is_doubly_stochastic_within_1e_4_for_spreads_up_to_10(n):
    generator = torch.Generator().manual_seed(n)
    for spread in range(11):
        p = sinkhorn(_logits_of_spread(24, n, spread, generator), num_iters=20, tol=1e-6)
        assert p.dtype == torch.float32 and (p >= 0).all()
        assert _max_marginal_error(p) <= 1e-4, (n, spread)


def test_the_papers_fixed_twenty_sweeps_leave_rows_off_by_percents_at_spread_10():
    """What the tolerance fixes: 20 alternating normalisations are not a projection for larger spreads."""
    generator = torch.Generator().manual_seed(0)
    p = sinkhorn(_logits_of_spread(64, 4, 10.0, generator), num_iters=20)
    assert _max_marginal_error(p) > 1e-2


@pytest.mark.parametrize("logits", [(10.0, 0.0, 0.0, 0.0), (3.0, -7.0, 1.0, 0.5), (0.0, 10.0, 10.0, 0.0)])
def test_sinkhorn_of_2x2_matches_the_closed_form_value_and_gradient(logits):
    """For 2 x 2 the projection is [[p, 1-p], [1-p, p]] with p = sigmoid((a + d - b - c) / 2), so
    d/dL sum(G * P) = (G11 + G22 - G12 - G21) p (1 - p) / 2 * [[1, -1], [-1, 1]]."""
    a, b, c, d = logits
    L = torch.tensor([[a, b], [c, d]], dtype=torch.float64, requires_grad=True)
    G = torch.tensor([[0.3, -1.2], [0.7, 2.0]], dtype=torch.float64)
    P = sinkhorn(L, num_iters=20, tol=1e-12)
    p = 1 / (1 + math.exp(-(a + d - b - c) / 2))
    torch.testing.assert_close(
        P.detach(), torch.tensor([[p, 1 - p], [1 - p, p]], dtype=torch.float64), atol=1e-11, rtol=0
    )
    (P * G).sum().backward()
    k = float(G[0, 0] + G[1, 1] - G[0, 1] - G[1, 0]) * p * (1 - p) / 2
    expected = k * torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(L.grad, expected, atol=1e-11, rtol=1e-8)


def test_sinkhorn_to_tolerance_gradient_equals_autograd_through_a_converged_unrolled_loop():
    L = (1.0 * torch.randn(3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))).requires_grad_()
    G = torch.randn(3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    (sinkhorn(L, num_iters=20, tol=1e-12) * G).sum().backward()
    implicit, L.grad = L.grad.clone(), None
    (_unrolled_float64(L, 300) * G).sum().backward()  # converged for this spread
    torch.testing.assert_close(implicit, L.grad, atol=1e-10, rtol=1e-8)
    assert torch.autograd.gradcheck(
        lambda x: sinkhorn(x, num_iters=20, tol=1e-13), (L.detach().clone().requires_grad_(),)
    )


def test_gradients_reach_the_residual_logits_through_the_tolerance_sinkhorn():
    layers = [HyperConnection(_NormFFN(8), n_streams=4, sinkhorn_tol=1e-6) for _ in range(3)]
    with torch.no_grad():
        layers[1].res_logits.add_(torch.linspace(0, 4, 16).view(4, 4))  # a spread-10 mixing
    for grad, name in _mixing_grads(layers, 4):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().max() > 1e-8, name


def test_sinkhorn_rejects_a_nonpositive_tolerance():
    with pytest.raises(ValueError, match="tol"):
        sinkhorn(torch.zeros(2, 2), tol=0.0)


# ----- input-dependent (dynamic) maps ---------------------------------------------------------------------------------


def _paper_oracle(layer: HyperConnection, streams: torch.Tensor, fn) -> torch.Tensor:
    """mHC eqs. 7-8 token by token with explicit loops (no shared code path with HyperConnection.mix)."""
    n = layer.n_streams
    phi, (a_pre, a_post, a_res) = layer.dynamic_proj.detach(), layer.dynamic_gates.detach().tolist()
    out = torch.empty_like(streams)
    for index in torch.cartesian_prod(*(torch.arange(k) for k in streams.shape[:-2])):
        X = streams[tuple(index)]  # (n, d)
        v = X.reshape(-1)
        x = v / torch.sqrt((v**2).mean() + 1e-6)
        pre = torch.sigmoid(a_pre * (x @ phi[:, :n]) + layer.pre_logits.detach())
        post = 2 * torch.sigmoid(a_post * (x @ phi[:, n : 2 * n]) + layer.post_logits.detach())
        res = a_res * (x @ phi[:, 2 * n :]).reshape(n, n) + layer.res_logits.detach()
        h_res = _unrolled_float64(res, 3000).float()  # an independent solver, converged for these spreads
        y = fn(sum(pre[i] * X[i] for i in range(n)))
        out[tuple(index)] = h_res @ (X + post[:, None] * y[None, :])
    return out


def test_dynamic_maps_follow_the_papers_formula_token_by_token():
    torch.manual_seed(0)
    branch = _NormFFN(8)
    layer = HyperConnection(branch, n_streams=3, dim=8, dynamic=True, sinkhorn_tol=1e-7)
    with torch.no_grad():
        layer.dynamic_proj.normal_(0, 0.2)
        layer.dynamic_gates.copy_(torch.tensor([0.7, -0.4, 1.3]))
    streams = torch.randn(2, 4, 3, 8)
    with torch.no_grad():
        torch.testing.assert_close(layer(streams), _paper_oracle(layer, streams, branch), atol=2e-5, rtol=1e-4)


def test_zero_initialised_dynamic_part_starts_as_the_static_wrapper_and_still_learns():
    torch.manual_seed(0)
    branch = _NormFFN(8)
    static = HyperConnection(branch, n_streams=4, sinkhorn_tol=1e-6)
    dynamic = HyperConnection(branch, n_streams=4, dim=8, dynamic=True, sinkhorn_tol=1e-6)
    assert (dynamic.dynamic_proj == 0).all() and (dynamic.dynamic_gates == 0.01).all()
    streams = torch.randn(2, 5, 4, 8)
    torch.testing.assert_close(dynamic(streams), static(streams), atol=1e-6, rtol=1e-6)
    collapse_streams(dynamic(streams)).square().sum().backward()
    assert dynamic.dynamic_proj.grad.abs().max() > 1e-6  # the gates are nonzero, so the projection learns at once
    assert (dynamic.dynamic_gates.grad == 0).all()  # and the gates follow once the projection is nonzero


def test_dynamic_wrapper_needs_the_stream_width():
    with pytest.raises(ValueError, match="dim"):
        HyperConnection(_NormFFN(8), n_streams=2, dynamic=True)


MHC = {"vocab_size": 20, "context_length": 16, "d_model": 16, "num_heads": 2, "d_ff": 32, "d_state": 4,
       "scan_backend": "chunked", "residual": "mhc", "hc_expansion": 3}  # fmt: skip


def test_cached_decoding_with_dynamic_maps_matches_the_full_forward():
    torch.manual_seed(0)
    model = hybrid_lm(**MHC, pattern="AM", hc_dynamic=True, sinkhorn_tol=1e-6).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "dynamic_proj" in name:
                param.normal_(0, 0.3)
            if "dynamic_gates" in name:
                param.fill_(0.5)
    ids = torch.randint(0, 20, (2, 9))
    with torch.no_grad():
        full = model(ids)
        cache = model.make_cache(2, 9)
        steps = [model(ids[:, :4], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


# ----- the mixing learning-rate multiplier ----------------------------------------------------------------------------


def test_mixing_parameters_get_their_own_group_whose_rate_the_schedule_multiplies():
    model = hybrid_lm(**MHC, pattern="AM", hc_dynamic=True, hc_lr_multiplier=30.0)
    groups = parameter_groups(model, weight_decay=0.1)
    mixing = {id(p) for n, p in model.named_parameters() if n.endswith(("pre_logits", "post_logits", "res_logits"))}
    assert len(mixing) == 3 * 4  # 2 layers x 2 branches, three static logit tensors each
    scaled = [g for g in groups if g.get("lr_scale", 1.0) != 1.0]
    assert len(scaled) == 1 and scaled[0]["lr_scale"] == 30.0 and scaled[0]["weight_decay"] == 0.0
    assert {id(p) for p in scaled[0]["params"]} == mixing
    optimizer = AdamW(groups, lr=1.0)
    apply_learning_rate(optimizer, 1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [1e-3, 1e-3, pytest.approx(3e-2)]


def test_one_adam_step_moves_mixing_logits_by_the_multiplied_rate():
    """Adam's first step is lr * sign(grad) per element (bias-corrected m / sqrt(v) = +-1), so the mixing logits
    move by exactly m * lr while the branch's weights move by lr."""
    torch.manual_seed(0)
    layer = HyperConnection(_NormFFN(8), n_streams=4, lr_multiplier=30.0)
    optimizer = AdamW(parameter_groups(layer, weight_decay=0.0), lr=1.0, eps=1e-30)
    apply_learning_rate(optimizer, 1e-3)
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    collapse_streams(layer(expand_streams(torch.randn(2, 5, 8), 4))).square().sum().backward()
    optimizer.step()
    for name, param in layer.named_parameters():
        moved = (param.detach() - before[name]).abs()
        expected = 30e-3 if name.endswith("_logits") else 1e-3
        assert (param.grad != 0).any(), name  # the comparison below covers the elements with a gradient
        torch.testing.assert_close(moved[param.grad != 0], torch.full_like(moved[param.grad != 0], expected))


def test_spec_rejects_bad_mhc_options():
    for bad, match in (({"hc_lr_multiplier": 0.0}, "hc_lr_multiplier"), ({"sinkhorn_tol": -1.0}, "sinkhorn_tol")):
        with pytest.raises(ValueError, match=match):
            hybrid_lm(**MHC, pattern="AM", **bad)


# ----- diagnostics: how far the mixing moved ------------------------------------------------------------------------


def test_diagnostics_report_how_far_the_mixing_moved_from_its_initialisation():
    model = hybrid_lm(**MHC, pattern="AM", hc_dynamic=True, sinkhorn_tol=1e-6)
    model(torch.randint(0, 20, (2, 5)))
    start = model.diagnostics()
    assert start["mhc/max_abs_delta_from_init"] == 0.0 and start["mhc/res_logits_max_abs_delta_from_init"] == 0.0
    assert start["mhc/dynamic_proj_max_abs"] == 0.0 and start["mhc/dynamic_gate_max_abs"] == pytest.approx(0.01)
    # Sinkhorn of 6 I with n = 3: off-diagonal 1 / (e^6 + 2), diagonal e^6 / (e^6 + 2).
    assert start["mhc/h_res_max_abs_delta_from_identity"] == pytest.approx(2 / (math.exp(6) + 2), rel=1e-4)
    assert start["mhc/dynamic_mean_off_diagonal"] == pytest.approx(1 / (math.exp(6) + 2), rel=1e-4)
    hyper = (
        model.layers[1].hyper["mixer"]
        if "mixer" in model.layers[1].hyper
        else next(iter(model.layers[1].hyper.values()))
    )
    with torch.no_grad():
        hyper.res_logits[0, 1] += 2.5
        hyper.post_logits[2] -= 4.0
    moved = model.diagnostics()
    assert moved["mhc/res_logits_max_abs_delta_from_init"] == pytest.approx(2.5)
    assert moved["mhc/max_abs_delta_from_init"] == pytest.approx(4.0)
    assert moved["mhc/h_res_max_abs_delta_from_identity"] > start["mhc/h_res_max_abs_delta_from_identity"]


@pytest.mark.slow
def test_every_mhc_run_records_how_far_its_mixing_moved(tmp_path):
    """Through the real runner: the final summary and every evaluation row carry the mHC movement diagnostics."""
    import json

    from tests.test_golden_losses import CASES, final_val_loss

    final_val_loss(tmp_path, CASES["mhc_hybrid"])
    run = tmp_path / "runs" / "golden"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["diag/mhc/res_logits_max_abs_delta_from_init"] > 0.05  # 6 steps at up to 30 x 1e-2
    assert summary["diag/mhc/max_abs_delta_from_init"] >= summary["diag/mhc/res_logits_max_abs_delta_from_init"]
    assert summary["diag/mhc/dynamic_proj_max_abs"] > 0
    for key in ("h_res_max_abs_delta_from_identity", "mean_off_diagonal", "dynamic_mean_off_diagonal"):
        assert f"diag/mhc/{key}" in summary
    evals = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [row for row in evals if row["kind"] == "eval"]
    assert evals and all("diag/mhc/res_logits_max_abs_delta_from_init" in row for row in evals)
