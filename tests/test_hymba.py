"""Specification of the Hymba-style parallel attention + SSM heads model (``hymba_lm``)."""

import io

import pytest
import torch

from cs336_basics.models.base import parameter_groups
from cs336_basics.models.factory import hymba_lm
from cs336_basics.nn.conv import CausalDepthwiseConv1d
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.nn.layers import Embedding, Linear
from tests.lm_checks import greedy_by_recompute, successor_task_losses

TINY = {"vocab_size": 20, "context_length": 16, "d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32}
TINY |= {"d_state": 4, "scan_backend": "chunked"}
VARIANTS = {
    "plain": {},
    "meta_tokens": {"num_meta_tokens": 3},
    "sliding_window": {"window": 3, "global_layers": [1], "num_meta_tokens": 2},
    "moe": {"moe": {"num_experts": 3, "top_k": 2}},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_perturbing_future_tokens_leaves_past_logits_unchanged(variant):
    model = hymba_lm(**TINY, **VARIANTS[variant])
    ids = torch.randint(0, 20, (2, 12))
    changed = ids.clone()
    changed[:, 6:] = torch.randint(0, 20, (2, 6))
    logits = model(ids)
    assert logits.shape == (2, 12, 20)  # meta positions are not returned
    torch.testing.assert_close(logits[:, :6], model(changed)[:, :6], rtol=1e-5, atol=1e-5)


def test_meta_tokens_change_the_output_and_are_learned():
    model = hymba_lm(**TINY, num_meta_tokens=2)
    ids = torch.randint(0, 20, (1, 5))
    cross_entropy(model(ids), ids).backward()
    assert model.meta_tokens.grad.abs().sum() > 0


def test_only_linear_embedding_and_conv_weights_are_weight_decayed():
    """Meta tokens are learned inputs and must not be decayed; norms, scales and SSM A_log/D neither."""
    model = hymba_lm(**TINY, num_meta_tokens=3, moe={"num_experts": 3, "top_k": 2})
    decay, no_decay = (group["params"] for group in parameter_groups(model, weight_decay=0.1))
    matrices = {id(m.weight) for m in model.modules() if isinstance(m, (Linear, Embedding, CausalDepthwiseConv1d))}
    assert {id(p) for p in decay} == matrices
    assert any(p is model.meta_tokens for p in no_decay)


def test_sliding_window_limits_what_local_layers_see():
    model = hymba_lm(**TINY, window=2, global_layers=[])
    seen = []
    model.layers[0].attn.register_forward_hook(lambda m, i, o: seen.append(o))
    ids = torch.randint(0, 20, (1, 8))
    changed = ids.clone()
    changed[:, 0] = (ids[:, 0] + 1) % 20
    model(ids)
    model(changed)
    # Layer-0 attention at position 5 only sees positions 4 and 5, so token 0 cannot reach it.
    torch.testing.assert_close(seen[0][:, 5], seen[1][:, 5])
    assert not torch.allclose(seen[0][:, 1], seen[1][:, 1])


def test_branch_shares_sum_to_one_and_follow_the_scales():
    model = hymba_lm(**TINY)
    with torch.no_grad():
        model.layers[1].beta_attn.fill_(3.0)
    diagnostics = model.diagnostics()
    for i in range(2):
        total = diagnostics[f"hymba/layer{i}/share_attn"] + diagnostics[f"hymba/layer{i}/share_ssm"]
        assert total == pytest.approx(1.0)
    assert diagnostics["hymba/layer0/share_attn"] == pytest.approx(0.5)
    assert diagnostics["hymba/layer1/share_attn"] == pytest.approx(0.75)


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_matches_full_forward(variant):
    model = hymba_lm(**TINY, **VARIANTS[variant])
    ids = torch.randint(0, 20, (2, 9))
    cache = model.make_cache(2, 16)
    pieces = [model(ids[:, :5], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(5, 9)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trip_gives_identical_logits(variant):
    model = hymba_lm(**TINY, **VARIANTS[variant])
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(5)
    fresh = hymba_lm(**TINY, **VARIANTS[variant])
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    ids = torch.randint(0, 20, (2, 7))
    torch.testing.assert_close(fresh(ids), model(ids), rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_falls_on_a_tiny_learnable_task(variant):
    """25 AdamW steps on the successor task (next token = token + 1 mod V) cut the loss tenfold."""
    torch.manual_seed(0)
    model = hymba_lm(**TINY, **VARIANTS[variant])
    losses = successor_task_losses(model)
    assert losses[-1] < 0.1 * losses[0]


def test_out_of_range_global_layer_is_value_error():
    with pytest.raises(ValueError, match="global_layers"):
        hymba_lm(**TINY, window=4, global_layers=[5])


def test_greedy_generation_with_cache_matches_full_recompute():
    from cs336_basics.training.generation import generate

    model = hymba_lm(**TINY, num_meta_tokens=2, window=3, global_layers=[0]).eval()
    prompt = [3, 1, 4, 1, 5]
    new = generate(model, prompt, max_new_tokens=4, temperature=0.0)
    assert new == greedy_by_recompute(model, prompt, 4)
