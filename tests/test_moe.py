"""Specification of the sparse mixture-of-experts FFN: dropless routing, auxiliary losses and reporting."""

import io
import math

import pytest
import torch

from cs336_basics.models.factory import moe_spec
from cs336_basics.models.language_model import collect_auxiliary_losses
from cs336_basics.models.moe import (
    MoEFeedForward,
    collect_moe_diagnostics,
    moe_parameter_counts,
)
from tests.lm_checks import successor_task_losses


def _dense_loop(moe: MoEFeedForward, x: torch.Tensor) -> torch.Tensor:
    """Oracle: for every token separately, torch.softmax the router, take top-k and sum the experts' outputs."""
    flat = x.reshape(-1, x.shape[-1])
    rows = []
    for token in flat:
        probs = torch.softmax(token @ moe.router.weight.T, dim=-1)
        top_p, top_i = probs.topk(moe.top_k)
        if moe.top_k > 1:
            top_p = top_p / top_p.sum()
        rows.append(sum(p * moe.experts[int(i)](token) for p, i in zip(top_p, top_i, strict=True)))
    return torch.stack(rows).reshape(x.shape)


@pytest.mark.parametrize("top_k", [1, 2])
def test_dropless_moe_equals_dense_loop_over_tokens(top_k):
    moe = MoEFeedForward(d_model=8, num_experts=4, top_k=top_k, d_ff=16)
    x = torch.randn(3, 5, 8)
    torch.testing.assert_close(moe(x), _dense_loop(moe, x), rtol=1e-5, atol=1e-6)


def test_every_token_is_processed_even_when_all_pick_one_expert():
    moe = MoEFeedForward(d_model=8, num_experts=4, top_k=1, d_ff=16)
    with torch.no_grad():
        moe.router.weight.zero_()
        moe.router.weight[2] = 5.0  # every token with a positive feature sum routes to expert 2
    x = torch.rand(2, 16, 8) + 0.1
    out = moe(x)
    assert moe.last_expert_load.tolist() == [0.0, 0.0, 1.0, 0.0]
    torch.testing.assert_close(out, _dense_loop(moe, x), rtol=1e-5, atol=1e-6)
    assert (out.abs().sum(-1) > 0).all()


@pytest.mark.parametrize("convention", ["switch", "per_assignment"])
def test_auxiliary_loss_equals_hand_computed_value_for_fixed_routing(convention):
    """Top-1: both conventions are Switch's ``E * sum_i f_i P_i`` with f_i the fraction of tokens routed to i."""
    moe = MoEFeedForward(
        d_model=2, num_experts=2, top_k=1, d_ff=4, load_balance_weight=0.5, z_loss_weight=0.25,
        balance_convention=convention,
    )  # fmt: skip
    with torch.no_grad():
        moe.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    # Token logits: [2, 0] -> expert 0; [0, 2] -> expert 1; [3, 0] -> expert 0.
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    moe(x)
    s2 = torch.sigmoid(torch.tensor(2.0)).item()  # softmax([2, 0])[0]
    s3 = torch.sigmoid(torch.tensor(3.0)).item()
    p0 = (s2 + (1 - s2) + s3) / 3
    p1 = 1 - p0
    balance = 2 * (2 / 3 * p0 + 1 / 3 * p1)
    lse2 = torch.log(torch.exp(torch.tensor(2.0)) + 1).item()
    lse3 = torch.log(torch.exp(torch.tensor(3.0)) + 1).item()
    z = (2 * lse2**2 + lse3**2) / 3
    assert moe.last_load_balance_loss.item() == pytest.approx(balance, rel=1e-6)
    assert moe.last_z_loss.item() == pytest.approx(z, rel=1e-6)
    assert moe.auxiliary_loss().item() == pytest.approx(0.5 * balance + 0.25 * z, rel=1e-6)


def _top2_case(convention: str) -> MoEFeedForward:
    """Three experts, router = identity, so each token's logits are its features."""
    moe = MoEFeedForward(d_model=3, num_experts=3, top_k=2, d_ff=4, balance_convention=convention)
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(3))
    return moe


TOP2_TOKENS = torch.tensor([[2.0, 1.0, 0.0], [2.0, 0.0, 1.0], [0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])


def _hand_top2_terms() -> tuple[list[float], list[float]]:
    """By hand: top-2 sets {0,1}, {0,2}, {1,2}, {0,2}: expert 0 gets 3 of the 8 assignments, 1 gets 2, 2 gets 3."""
    counts = [3.0, 2.0, 3.0]
    e = [math.exp(v) for v in (0.0, 1.0, 2.0, 3.0)]
    rows = [  # softmax of each token's logits, written out
        [e[2] / (e[2] + e[1] + e[0]), e[1] / (e[2] + e[1] + e[0]), e[0] / (e[2] + e[1] + e[0])],
        [e[2] / (e[2] + e[0] + e[1]), e[0] / (e[2] + e[0] + e[1]), e[1] / (e[2] + e[0] + e[1])],
        [e[0] / (e[0] + e[2] + e[1]), e[2] / (e[0] + e[2] + e[1]), e[1] / (e[0] + e[2] + e[1])],
        [e[3] / (e[3] + e[0] + e[1]), e[0] / (e[3] + e[0] + e[1]), e[1] / (e[3] + e[0] + e[1])],
    ]
    mean_prob = [sum(r[i] for r in rows) / 4 for i in range(3)]
    return counts, mean_prob


def test_top2_switch_convention_counts_tokens_per_expert_by_hand():
    """Switch/Mixtral convention: f_i = (tokens with i among their top-2) / N, so sum f = 2 and uniform scores 2."""
    moe = _top2_case("switch")
    moe(TOP2_TOKENS)
    counts, mean_prob = _hand_top2_terms()
    expected = 3 * sum(c / 4 * p for c, p in zip(counts, mean_prob, strict=True))
    assert moe.last_load_balance_loss.item() == pytest.approx(expected, rel=1e-6)


def test_top2_per_assignment_convention_is_one_over_k_of_switch():
    moe = _top2_case("per_assignment")
    moe(TOP2_TOKENS)
    counts, mean_prob = _hand_top2_terms()
    expected = 3 * sum(c / 8 * p for c, p in zip(counts, mean_prob, strict=True))
    assert moe.last_load_balance_loss.item() == pytest.approx(expected, rel=1e-6)
    switch = _top2_case("switch")
    switch(TOP2_TOKENS)
    torch.testing.assert_close(switch.last_load_balance_loss, 2 * moe.last_load_balance_loss)
    assert moe.last_expert_load.tolist() == pytest.approx([3 / 8, 2 / 8, 3 / 8])  # load shares: same in both


def _transformers_style_balance_loss(logits: torch.Tensor, num_experts: int, top_k: int) -> torch.Tensor:
    """Oracle: the Mixtral/Switch formula as Hugging Face transformers writes it (one-hot of the top-k, mean over
    tokens giving a (k, E) table, times the mean router probabilities, summed, times E), rewritten here."""
    probs = torch.softmax(logits, dim=-1)
    chosen = torch.topk(probs, top_k, dim=-1).indices
    mask = torch.nn.functional.one_hot(chosen, num_experts).float()  # (N, k, E)
    return (mask.mean(dim=0) * probs.mean(dim=0)[None]).sum() * num_experts


@pytest.mark.parametrize("top_k", [1, 2])
def test_switch_convention_equals_transformers_formula_on_random_routing(top_k):
    torch.manual_seed(0)
    moe = MoEFeedForward(d_model=8, num_experts=5, top_k=top_k, d_ff=8)
    x = torch.randn(40, 8)
    moe(x)
    oracle = _transformers_style_balance_loss(x @ moe.router.weight.T, 5, top_k)
    torch.testing.assert_close(moe.last_load_balance_loss, oracle)


@pytest.mark.parametrize(("convention", "uniform_value"), [("switch", 2.0), ("per_assignment", 1.0)])
def test_uniform_router_scores_k_or_one_by_convention(convention, uniform_value):
    moe = MoEFeedForward(d_model=4, num_experts=4, top_k=2, d_ff=8, balance_convention=convention)
    with torch.no_grad():
        moe.router.weight.zero_()
    moe(torch.randn(10, 4))
    # Uniform probabilities: P_i = 1/4 whatever the tie-breaking, so E * sum f_i P_i = sum f_i = k (or 1).
    assert moe.last_load_balance_loss.item() == pytest.approx(uniform_value)


def test_unbalanced_routing_can_score_below_the_uniform_value_but_max_min_load_shows_it():
    """E=2, top-1: three tokens lean barely to expert 0, one is certain of expert 1. Load 3:1, yet
    P = (0.75 * 0.5025 + 0.25 * 0, ...) gives 2 * (0.75 * 0.377 + 0.25 * 0.623) = 0.877 < 1."""
    moe = MoEFeedForward(d_model=2, num_experts=2, top_k=1, d_ff=4)
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(2))
    x = torch.tensor([[0.01, 0.0], [0.01, 0.0], [0.01, 0.0], [-20.0, 0.0]])
    moe(x)
    p0 = (3 * torch.sigmoid(torch.tensor(0.01)).item() + torch.sigmoid(torch.tensor(-20.0)).item()) / 4
    expected = 2 * (0.75 * p0 + 0.25 * (1 - p0))
    assert moe.last_load_balance_loss.item() == pytest.approx(expected, rel=1e-6)
    assert expected < 0.88
    diag = collect_moe_diagnostics(torch.nn.ModuleDict({"m": moe}))
    assert diag["moe/m/max_load"] == pytest.approx(0.75) and diag["moe/m/min_load"] == pytest.approx(0.25)


def test_unknown_balance_convention_is_a_value_error():
    with pytest.raises(ValueError, match="balance_convention"):
        MoEFeedForward(8, num_experts=4, top_k=2, balance_convention="gshard")


def test_router_receives_gradient_from_task_and_aux_loss():
    moe = MoEFeedForward(d_model=8, num_experts=4, top_k=1, d_ff=16)
    (moe(torch.randn(4, 8)).sum() + moe.auxiliary_loss()).backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_collectors_walk_nested_modules():
    model = torch.nn.ModuleDict({"a": MoEFeedForward(8, 4, 2, 16), "b": MoEFeedForward(8, 4, 1, 16)})
    x = torch.randn(6, 8)
    model["a"](x)
    model["b"](x)
    expected = model["a"].auxiliary_loss() + model["b"].auxiliary_loss()
    torch.testing.assert_close(collect_auxiliary_losses(model), expected)
    diag = collect_moe_diagnostics(model)
    assert sum(diag[f"moe/a/load_{e}"] for e in range(4)) == pytest.approx(1.0)
    assert "moe/b/z_loss" in diag


def test_parameter_counts_report_total_and_active():
    moe = MoEFeedForward(d_model=8, num_experts=4, top_k=1, d_ff=16)
    per_expert = 3 * 8 * 16
    counts = moe_parameter_counts(moe)
    assert counts["total"] == 4 * 8 + 4 * per_expert
    assert counts["active"] == 4 * 8 + 1 * per_expert


def test_invalid_top_k_and_unknown_config_keys_are_value_errors():
    with pytest.raises(ValueError, match="top_k"):
        MoEFeedForward(8, num_experts=4, top_k=3)
    with pytest.raises(ValueError, match="unknown keys"):
        moe_spec({"num_experts": 4, "capacity": 1.0})


def _moe_transformer():
    from cs336_basics.models.factory import transformer_lm

    return transformer_lm(20, 16, 16, 2, 2, moe={"num_experts": 3, "top_k": 2, "d_ff": 16})


def _weighted_aux_sum(model) -> torch.Tensor:
    """The model's auxiliary loss written out: every MoE layer's weighted load-balancing and z-loss of the last
    forward (each of those two is checked against a hand computation above)."""
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    assert layers
    return sum(m.load_balance_weight * m.last_load_balance_loss + m.z_loss_weight * m.last_z_loss for m in layers)


def test_transformer_with_moe_ffn_reports_aux_loss_and_stays_causal():
    model = _moe_transformer()
    ids = torch.randint(0, 20, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(0, 20, (2, 4))
    past = model(ids)[:, :6]
    assert model.auxiliary_loss().item() > 0
    torch.testing.assert_close(model.auxiliary_loss(), _weighted_aux_sum(model))
    torch.testing.assert_close(model(changed)[:, :6], past, rtol=1e-5, atol=1e-5)
    assert len([k for k in collect_moe_diagnostics(model) if "/load_" in k]) == 2 * 3


def test_mamba_with_moe_ffn_reports_aux_loss():
    from cs336_basics.models.factory import mamba_lm

    model = mamba_lm(20, 16, 2, d_state=4, moe={"num_experts": 3, "top_k": 1, "d_ff": 16}, scan_backend="chunked")
    model(torch.randint(0, 20, (2, 8)))
    aux = model.auxiliary_loss()
    assert aux.item() > 0
    torch.testing.assert_close(aux, _weighted_aux_sum(model))
    counts = moe_parameter_counts(model)
    assert counts["total"] - counts["active"] == 2 * 2 * (3 * 16 * 16)


def _moe_mamba():
    from cs336_basics.models.factory import mamba_lm

    return mamba_lm(20, 16, 1, d_state=4, moe={"num_experts": 3, "top_k": 2, "d_ff": 32}, scan_backend="chunked")


MOE_MODELS = {"transformer": _moe_transformer, "mamba": _moe_mamba}


@pytest.mark.parametrize("architecture", MOE_MODELS)
def test_moe_model_loss_falls_on_a_tiny_learnable_task(architecture):
    """25 AdamW steps (task + auxiliary loss) on the successor task (next token = token + 1 mod V) cut the loss 10x."""
    torch.manual_seed(0)
    model = MOE_MODELS[architecture]()
    losses = successor_task_losses(model)
    assert losses[-1] < 0.1 * losses[0]


@pytest.mark.parametrize("architecture", MOE_MODELS)
def test_moe_model_state_dict_round_trip_gives_identical_logits(architecture):
    model = MOE_MODELS[architecture]()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(11)
    fresh = MOE_MODELS[architecture]()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    ids = torch.randint(0, 20, (2, 9))
    torch.testing.assert_close(fresh(ids), model(ids), rtol=0, atol=0)


def test_transformer_and_mamba_with_moe_report_expert_load_through_diagnostics():
    """The runner logs model.diagnostics(); a Transformer or Mamba with MoE FFNs must expose per-expert load there."""
    from cs336_basics.models.factory import mamba_lm

    models = {
        "transformer": _moe_transformer(),
        "mamba": mamba_lm(20, 16, 2, d_state=4, moe={"num_experts": 3, "top_k": 1, "d_ff": 16}, scan_backend="chunked"),
    }
    for name, model in models.items():
        model(torch.randint(0, 20, (2, 8)))
        diag = model.diagnostics()
        loads = [v for k, v in diag.items() if "/load_" in k]
        assert len(loads) == 2 * 3, name
        assert abs(sum(loads) - 2.0) < 1e-5, name  # each layer's load fractions sum to one


def test_balance_convention_reaches_every_layer_from_the_config_dict_and_bad_values_fail_validation():
    from cs336_basics.models.factory import transformer_lm
    from cs336_basics.models.spec import ModelSpec, MoESpec

    model = transformer_lm(20, 16, 16, 2, 2, moe={"num_experts": 3, "top_k": 2, "balance_convention": "per_assignment"})
    layers = [m for m in model.modules() if isinstance(m, MoEFeedForward)]
    assert len(layers) == 2 and all(m.balance_convention == "per_assignment" for m in layers)
    assert MoESpec().balance_convention == "switch"
    spec = ModelSpec(vocab_size=20, d_model=16, plan="M")
    spec.ffn.moe = MoESpec(balance_convention="mixtral")
    with pytest.raises(ValueError, match="balance_convention"):
        spec.validate()


def test_switch_router_init_has_the_papers_standard_deviation_and_cut():
    """Switch Transformer init: truncated normal, std sqrt(s / fan_in) with s = 0.1, cut at two (parent) stds."""
    from cs336_basics.models.moe import switch_router_init_

    torch.manual_seed(0)
    w = switch_router_init_(torch.empty(512, 2048), scale=0.1)
    target = math.sqrt(0.1 / 2048)
    assert w.std().item() == pytest.approx(target, rel=0.01)
    parent = target / 0.8796256610342398  # std of N(0, 1) cut at +-2, tabulated
    assert w.abs().max().item() <= 2 * parent * (1 + 1e-6)
    assert w.abs().max().item() > 1.95 * parent  # the cut sits at 2 parent stds, not 3


def _mean_top_probability(router_init: str, experts: int = 8, d_model: int = 64, draws: int = 40) -> float:
    """Mean over routers and tokens of the largest router probability, for RMS-normalised inputs (what a block's
    pre-FFN RMSNorm feeds the router at init)."""
    torch.manual_seed(0)
    total = 0.0
    for _ in range(draws):
        moe = MoEFeedForward(d_model, num_experts=experts, top_k=2, d_ff=4, router_init=router_init)
        x = torch.randn(256, d_model)
        x = x / x.square().mean(-1, keepdim=True).sqrt()
        total += torch.softmax(x @ moe.router.weight.T, dim=-1).max(-1).values.mean().item()
    return total / draws


def test_router_starts_near_uniform_with_switch_init():
    """With 8 experts each logit is N(0, 0.1) at init, so the mean top probability is E[max softmax] of 8 such
    logits (a Monte Carlo oracle, ~0.19) and near the uniform 0.125; the CS336 Linear init gives ~0.44."""
    torch.manual_seed(1)
    oracle = torch.softmax(torch.randn(400_000, 8) * math.sqrt(0.1), dim=-1).max(-1).values.mean().item()
    switch = _mean_top_probability("switch")
    assert switch == pytest.approx(oracle, abs=0.01)
    assert abs(switch - 1 / 8) < 0.07
    assert _mean_top_probability("cs336") > 0.38


def test_router_init_option_reaches_the_model_and_cs336_keeps_the_linear_init():
    from cs336_basics.models.factory import transformer_lm

    torch.manual_seed(3)
    old = transformer_lm(20, 16, 64, 1, 2, moe={"num_experts": 8, "router_init": "cs336"})
    router = next(m for m in old.modules() if isinstance(m, MoEFeedForward)).router.weight
    assert router.std().item() == pytest.approx(math.sqrt(2 / (64 + 8)) * 0.986, rel=0.15)  # trunc at 3 std: 0.986
    new = transformer_lm(20, 16, 64, 1, 2, moe={"num_experts": 8, "router_init_scale": 0.4})
    router = next(m for m in new.modules() if isinstance(m, MoEFeedForward)).router.weight
    assert router.std().item() == pytest.approx(math.sqrt(0.4 / 64), rel=0.15)
    with pytest.raises(ValueError, match="router_init"):
        MoEFeedForward(8, num_experts=4, router_init="zeros")


def test_named_legacy_options_reproduce_the_golden_value_recorded_before_the_defaults_changed(tmp_path):
    """The moe_hybrid golden case (an AM hybrid, top-2 MoE FFNs) with balance_convention='per_assignment',
    router_init='cs336' and ssm.init='cs336' trains to the exact final loss recorded before those became options."""
    from tests.test_golden_losses import CASES, final_val_loss

    model = dict(CASES["moe_hybrid"])
    legacy = {"balance_convention": "per_assignment", "router_init": "cs336"}
    model["options"] = {"moe": {**model["options"]["moe"], **legacy}}
    model["ssm"] = {"init": "cs336"}
    assert final_val_loss(tmp_path, model) == 2.303396463394165
