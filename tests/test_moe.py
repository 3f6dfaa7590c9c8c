"""Specification of the sparse mixture-of-experts FFN: dropless routing, auxiliary losses and reporting."""

import io

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


def test_auxiliary_loss_equals_hand_computed_value_for_fixed_routing():
    moe = MoEFeedForward(d_model=2, num_experts=2, top_k=1, d_ff=4, load_balance_weight=0.5, z_loss_weight=0.25)
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


def test_balanced_uniform_router_gives_load_balance_loss_one():
    moe = MoEFeedForward(d_model=4, num_experts=4, top_k=2, d_ff=8)
    with torch.no_grad():
        moe.router.weight.zero_()
    moe(torch.randn(10, 4))
    # Uniform probabilities: P_i = 1/4 whatever the tie-breaking, so E * sum f_i P_i = 1.
    assert moe.last_load_balance_loss.item() == pytest.approx(1.0)


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


def test_transformer_with_moe_ffn_reports_aux_loss_and_stays_causal():
    model = _moe_transformer()
    ids = torch.randint(0, 20, (2, 10))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(0, 20, (2, 4))
    past = model(ids)[:, :6]
    torch.testing.assert_close(collect_auxiliary_losses(model), model.auxiliary_loss())
    torch.testing.assert_close(model(changed)[:, :6], past, rtol=1e-5, atol=1e-5)
    assert len([k for k in collect_moe_diagnostics(model) if "/load_" in k]) == 2 * 3


def test_mamba_with_moe_ffn_reports_aux_loss():
    from cs336_basics.models.factory import mamba_lm

    model = mamba_lm(20, 16, 2, d_state=4, moe={"num_experts": 3, "top_k": 1, "d_ff": 16}, scan_backend="chunked")
    model(torch.randint(0, 20, (2, 8)))
    aux = collect_auxiliary_losses(model)
    assert aux.item() > 0
    torch.testing.assert_close(aux, model.auxiliary_loss())
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
