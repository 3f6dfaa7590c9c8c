"""Specification of the attention/Mamba layer-pattern hybrid (``hybrid_lm``) and its options."""

import io
import math

import pytest
import torch

from cs336_basics.models.base import count_parameters, parameter_groups
from cs336_basics.models.factory import hybrid_lm
from cs336_basics.nn.conv import CausalDepthwiseConv1d
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.nn.layers import Embedding, Linear
from cs336_basics.optim.adamw import AdamW
from tests.adapters import run_hybrid_lm
from tests.lm_checks import greedy_by_recompute

# The seed study's twelve patterns and its ~25M-parameter budget (d_model 384, vocab 10,000): each pattern gets the
# d_ff that lands closest to the budget.
STUDY_PATTERNS = (
    "AAMMAAMMAA", "MAMMAMMMA", "AMAMAMAM", "MAMAMAMA", "AMMMMMMA", "AAMMMMAA",
    "AMMMMMA", "MMMMAAAA", "MMMMAAA", "AAAAMMMM", "MMMMMMMM", "AAAAAAAA",
)  # fmt: skip
STUDY_TARGET_PARAMS = 25_000_000
TINY = {"vocab_size": 20, "context_length": 16, "d_model": 16, "num_heads": 2, "d_ff": 32, "d_state": 4}
FAST = {**TINY, "scan_backend": "chunked"}
VARIANTS = {
    "standard": {},
    "mhc": {"residual": "mhc", "hc_expansion": 2},
    "moe": {"moe": {"num_experts": 3, "top_k": 2}},
    "fast_weights": {"fast_weights": True, "fast_weight_heads": 2},
}


def _closed_form_parameters(pattern, vocab, d, d_ff, d_state=16, d_conv=4, expand=2):
    """Independent count: SwiGLU 3 d d_ff; attention 4 d^2; Mamba-1 mixer with dt_rank ceil(d/16); norms d each."""
    ffn = 3 * d * d_ff
    attention_layer = 4 * d * d + 2 * d + ffn
    di, rank = expand * d, math.ceil(d / 16)
    mixer = 2 * di * d + di * d_conv + di + (rank + 2 * d_state) * di + rank * di + di + di * d_state + di + d * di
    mamba_layer = mixer + 2 * d + ffn
    return 2 * vocab * d + d + sum(attention_layer if c == "A" else mamba_layer for c in pattern)


def _closest_d_ff(pattern, target, vocab, d):
    """Independent choice of d_ff: scan every multiple of 64 with the closed form, keep the one nearest the target."""
    return min(range(64, 64 * 128, 64), key=lambda d_ff: abs(_closed_form_parameters(pattern, vocab, d, d_ff) - target))


@pytest.mark.parametrize("pattern", STUDY_PATTERNS)
def test_study_pattern_d_ff_and_parameter_count_match_formula_and_land_in_23_to_27m(pattern):
    with torch.device("meta"):
        model = hybrid_lm(10000, 256, 384, 8, d_state=16, pattern=pattern, target_params=STUDY_TARGET_PARAMS)
    expected_d_ff = _closest_d_ff(pattern, STUDY_TARGET_PARAMS, 10000, 384)
    assert model.spec.ffn.d_ff == expected_d_ff
    total = count_parameters(model)["total"]
    assert total == _closed_form_parameters(pattern, 10000, 384, expected_d_ff)
    assert 23_000_000 <= total <= 27_000_000


def test_layer_kinds_follow_the_pattern():
    model = hybrid_lm(**TINY, pattern="AMMA")
    keys = model.state_dict().keys()
    assert "layers.0.attn.q_proj.weight" in keys and "layers.3.ln2.weight" in keys
    assert "layers.1.mixer.A_log" in keys and "layers.2.ffn.w2.weight" in keys
    assert {"token_embeddings.weight", "ln_final.weight", "lm_head.weight"} <= set(keys)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("AMX", "layer plan 'AMX' has unknown block letter 'X' at position 2; use one of AHM"),
        ("", "non-empty"),
        ("am", "unknown block letter 'a' at position 0"),
    ],
)
def test_invalid_pattern_is_value_error_naming_the_position(pattern, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        hybrid_lm(**TINY, pattern=pattern)


def test_d_ff_and_target_params_together_are_rejected():
    with pytest.raises(ValueError, match="target_params"):
        hybrid_lm(**TINY, pattern="AM", target_params=10_000)


@pytest.mark.parametrize("variant", VARIANTS)
def test_perturbing_future_tokens_leaves_past_logits_unchanged(variant):
    model = hybrid_lm(**FAST, pattern="AMMA", **VARIANTS[variant])
    ids = torch.randint(0, 20, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(0, 20, (2, 5))
    torch.testing.assert_close(model(ids)[:, :7], model(changed)[:, :7], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trip_gives_identical_logits(variant):
    model = hybrid_lm(**TINY, pattern="MA", **VARIANTS[variant])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    fresh = hybrid_lm(**TINY, pattern="MA", **VARIANTS[variant])
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    ids = torch.randint(0, 20, (2, 9))
    torch.testing.assert_close(fresh(ids), model(ids), rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_matches_full_forward(variant):
    model = hybrid_lm(**FAST, pattern="AMMA", **VARIANTS[variant])
    ids = torch.randint(0, 20, (2, 10))
    cache = model.make_cache(2, 16)
    pieces = [model(ids[:, :6], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(6, 10)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(ids), rtol=1e-4, atol=1e-4)


def _train_loss(model, steps, lr=1e-2):
    """Train on a deterministic successor task (next token = token + 1 mod V); return (first, last) loss."""
    optimizer = AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        start = torch.randint(0, 20, (8, 1), generator=generator)
        seq = (start + torch.arange(13)) % 20
        logits = model(seq[:, :-1])
        loss = cross_entropy(logits, seq[:, 1:]) + model.auxiliary_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_falls_on_a_tiny_learnable_task(variant):
    model = hybrid_lm(**FAST, pattern="AM", **VARIANTS[variant])
    first, last = _train_loss(model, steps=25, lr=2e-2)
    assert last < 0.1 * first


def test_only_linear_embedding_and_conv_weights_are_weight_decayed_with_every_option_on():
    """mHC mixing logits, fast-weight rate/decay, norms and SSM A_log/D stay out of the decayed group."""
    model = hybrid_lm(**TINY, pattern="AM", **{k: v for variant in VARIANTS.values() for k, v in variant.items()})
    groups = parameter_groups(model, weight_decay=0.1)  # mHC's mixing parameters add a group with its own lr_scale
    decay = [p for group in groups if group["weight_decay"] for p in group["params"]]
    no_decay = [p for group in groups if not group["weight_decay"] for p in group["params"]]
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, (Linear, Embedding, CausalDepthwiseConv1d))}
    assert {id(p) for p in decay} == matrices
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_moe_variant_reports_aux_loss_and_expert_load():
    model = hybrid_lm(**TINY, pattern="AM", moe={"num_experts": 3, "top_k": 1})
    model(torch.randint(0, 20, (2, 8)))
    assert model.auxiliary_loss().item() > 0
    diagnostics = model.diagnostics()
    loads = [v for k, v in diagnostics.items() if k.startswith("moe/layers.1.ffn/load_")]
    assert len(loads) == 3 and sum(loads) == pytest.approx(1.0)


def test_adapter_with_no_weights_initialises_from_seed_zero():
    ids = torch.randint(0, 20, (1, 6))
    kwargs = {k: TINY[k] for k in ("vocab_size", "context_length", "d_model", "num_heads", "d_ff", "d_state")}
    logits = run_hybrid_lm(**kwargs, pattern="AM", rope_theta=10000.0, weights=None, in_indices=ids)
    torch.manual_seed(0)
    expected = hybrid_lm(**TINY, pattern="AM")(ids)
    torch.testing.assert_close(logits, expected, rtol=0, atol=0)


def test_adapter_loads_given_weights():
    ids = torch.randint(0, 20, (1, 6))
    torch.manual_seed(7)
    model = hybrid_lm(**TINY, pattern="MAM")
    kwargs = {k: TINY[k] for k in ("vocab_size", "context_length", "d_model", "num_heads", "d_ff", "d_state")}
    logits = run_hybrid_lm(**kwargs, pattern="MAM", rope_theta=10000.0, weights=model.state_dict(), in_indices=ids)
    torch.testing.assert_close(logits, model(ids), rtol=0, atol=0)


def test_sequence_longer_than_context_is_value_error():
    model = hybrid_lm(**TINY, pattern="AM")
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_greedy_generation_with_cache_matches_full_recompute():
    from cs336_basics.training.generation import generate

    model = hybrid_lm(**FAST, pattern="MA", residual="mhc", hc_expansion=2).eval()
    prompt = [3, 1, 4, 1, 5]
    new = generate(model, prompt, max_new_tokens=4, temperature=0.0)
    assert new == greedy_by_recompute(model, prompt, 4)


def test_mhc_diagnostics_report_unit_gain_and_small_initial_mixing():
    model = hybrid_lm(**FAST, pattern="AM", residual="mhc", hc_expansion=3)
    diagnostics = model.diagnostics()
    assert diagnostics["mhc/residual_gain"] == pytest.approx(1.0, abs=1e-3)
    assert 0 < diagnostics["mhc/mean_off_diagonal"] < 5e-3


def test_mhc_residual_logit_sets_how_far_from_identity_the_mixing_starts():
    # Sinkhorn of c*I with n=3 streams: off-diagonal ~ 1 / (e^c + 2) -> 0.0025 at c=6, 0.107 at c=2.
    near = hybrid_lm(**FAST, pattern="AM", residual="mhc", hc_expansion=3).diagnostics()["mhc/mean_off_diagonal"]
    loose = hybrid_lm(**FAST, pattern="AM", residual="mhc", hc_expansion=3, hc_residual_logit=2.0).diagnostics()
    assert near == pytest.approx(1 / (math.exp(6) + 2), rel=0.05)
    assert loose["mhc/mean_off_diagonal"] == pytest.approx(1 / (math.exp(2) + 2), rel=0.05)
