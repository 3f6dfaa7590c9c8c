"""Specification of the Mamba language model (cs336_basics/models/mamba.py): layout, causality, decoding, training.

Oracles: the model's own full-sequence forward for decoding (itself tested against a slow reference in
test_mamba_block.py), a recompute-the-prefix greedy loop for ``generate``, ``torch.optim.AdamW`` for training.
"""

import math

import pytest
import torch

from cs336_basics.models.base import count_parameters, parameter_groups
from cs336_basics.models.factory import mamba_lm
from cs336_basics.models.language_model import LanguageModel
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.nn.layers import Linear
from cs336_basics.training.generation import generate
from tests.adapters import run_mamba_lm
from tests.lm_checks import greedy_by_recompute

VOCAB, D_MODEL, LAYERS = 32, 16, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def _lm(**kwargs) -> mamba_lm:
    return mamba_lm(VOCAB, D_MODEL, LAYERS, d_state=4, d_conv=4, expand=2, **kwargs)


def _lm_whose_state_matters(**kwargs) -> mamba_lm:
    """``_lm`` with every step size at softplus(0.5) ~ 0.97. At the default init (dt from 1e-3 to 1e-1) the SSM state
    moves the logits by under 1e-4, so a cache that dropped it would pass a decoding check at 1e-4; here dropping it
    moves them by ~2e-4 to 1e-3, while a correct cache stays within ~7e-7 of the full forward."""
    model = _lm(**kwargs)
    with torch.no_grad():
        for layer in model.layers:
            layer.mixer.dt_bias.fill_(0.5)
    return model


def _decode(model, ids: torch.Tensor, prompt_len: int, drop_ssm_state: bool = False) -> torch.Tensor:
    """Logits of a prefill of ``prompt_len`` tokens, then one token at a time through the cache; with
    ``drop_ssm_state`` the SSM states are zeroed after the prefill (the bug the decoding checks must see)."""
    cache = model.make_cache(ids.shape[0], ids.shape[1])
    parts = [model(ids[:, :prompt_len], cache=cache)]
    if drop_ssm_state:
        for state in cache.layers:
            state.own.ssm.zero_()
    parts += [model(ids[:, t : t + 1], cache=cache) for t in range(prompt_len, ids.shape[1])]
    assert cache.length == ids.shape[1]
    return torch.cat(parts, dim=1)


def test_state_dict_keys_follow_documented_layout():
    shapes = {k: tuple(v.shape) for k, v in _lm().state_dict().items()}
    d_inner, R, n = 2 * D_MODEL, 1, 4
    expected = {
        "token_embeddings.weight": (VOCAB, D_MODEL),
        "ln_final.weight": (D_MODEL,),
        "lm_head.weight": (VOCAB, D_MODEL),
    }
    for i in range(LAYERS):
        p = f"layers.{i}."
        expected |= {
            p + "norm.weight": (D_MODEL,),
            p + "mixer.in_proj.weight": (2 * d_inner, D_MODEL),
            p + "mixer.conv1d.weight": (d_inner, 4),
            p + "mixer.conv1d.bias": (d_inner,),
            p + "mixer.x_proj.weight": (R + 2 * n, d_inner),
            p + "mixer.dt_proj.weight": (d_inner, R),
            p + "mixer.dt_bias": (d_inner,),
            p + "mixer.A_log": (d_inner, n),
            p + "mixer.D": (d_inner,),
            p + "mixer.out_proj.weight": (D_MODEL, d_inner),
        }
    assert shapes == expected


def test_swiglu_ffn_adds_norm_and_ffn_keys():
    keys = _lm(ffn="swiglu", d_ff=48).state_dict().keys()
    assert {"layers.0.ffn_norm.weight", "layers.0.ffn.w1.weight", "layers.0.ffn.w2.weight"} <= keys


def test_forward_returns_logits_per_position():
    model = _lm()
    assert isinstance(model, LanguageModel)
    assert model(torch.randint(0, VOCAB, (3, 7))).shape == (3, 7, VOCAB)


def test_lm_is_causal():
    model = _lm(ffn="swiglu")
    ids = torch.randint(0, VOCAB, (2, 12))
    ids2 = ids.clone()
    ids2[:, 8:] = (ids2[:, 8:] + 1) % VOCAB
    logits, logits2 = model(ids), model(ids2)
    torch.testing.assert_close(logits[:, :8], logits2[:, :8])
    assert not torch.allclose(logits[:, 8:], logits2[:, 8:])


@pytest.mark.parametrize("prompt_len", [1, 2, 3, 4, 9])
def test_cached_decoding_equals_full_forward_at_every_position(prompt_len):
    model = _lm_whose_state_matters(ffn="swiglu").eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        full = model(ids)
        torch.testing.assert_close(_decode(model, ids, prompt_len), full, rtol=1e-5, atol=1e-5)
        # the check can fail: a cache that loses the SSM state after the prefill is outside it
        lost = _decode(model, ids, prompt_len, drop_ssm_state=True)
        assert not torch.allclose(lost, full, rtol=1e-5, atol=1e-5)


def test_multi_token_continuation_after_prefill_equals_full_forward():
    model = _lm_whose_state_matters().eval()
    ids = torch.randint(0, VOCAB, (1, 10))
    with torch.no_grad():
        cache = model.make_cache(1, 10)
        parts = [model(ids[:, :3], cache=cache), model(ids[:, 3:7], cache=cache), model(ids[:, 7:], cache=cache)]
        torch.testing.assert_close(torch.cat(parts, dim=1), model(ids), rtol=1e-5, atol=1e-5)


def test_cache_size_does_not_grow_with_sequence():
    model = _lm().eval()
    cache = model.make_cache(1, 1000)
    sizes = []
    with torch.no_grad():
        model(torch.randint(0, VOCAB, (1, 5)), cache=cache)
        for _ in range(3):
            model(torch.randint(0, VOCAB, (1, 1)), cache=cache)
            sizes.append(sum(s.conv.numel() + s.ssm.numel() for s in (state.own for state in cache.layers)))
    assert sizes == [sizes[0]] * 3 == [LAYERS * 2 * D_MODEL * (3 + 4)] * 3


def test_generate_with_recurrent_cache_matches_greedy_recompute():
    model = _lm_whose_state_matters().eval()
    prompt = [3, 1, 4, 1, 5]
    assert generate(model, prompt, max_new_tokens=6, temperature=0.0) == greedy_by_recompute(model, prompt, 6)


def test_adapter_loads_state_dict_round_trip():
    source = _lm()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01 * torch.randn_like(p))
    weights = {k: v.clone() for k, v in source.state_dict().items()}
    ids = torch.randint(0, VOCAB, (2, 6))
    got = run_mamba_lm(VOCAB, D_MODEL, LAYERS, d_state=4, d_conv=4, expand=2, weights=weights, in_indices=ids)
    torch.testing.assert_close(got, source(ids))


def test_tied_embeddings_share_one_matrix():
    model = _lm(tie_embeddings=True)
    assert model.lm_head.weight is model.token_embeddings.weight
    untied = count_parameters(_lm())["total"]
    assert count_parameters(model)["total"] == untied - VOCAB * D_MODEL


def test_residual_out_projections_scaled_by_depth():
    """mixer_seq_simple: out_proj is nn.Linear's U(+-1/sqrt(fan_in)) divided by sqrt(residual branches); 8 layers
    with an FFN make 16 branches, so 1/4. The dense FFN's w2 (CS336 init) gets the same 1/4."""
    torch.manual_seed(0)
    deep = mamba_lm(VOCAB, 64, 8, ffn="swiglu")
    out_proj = deep.layers[0].mixer.out_proj.weight
    bound = 1 / math.sqrt(128) / 4
    assert out_proj.abs().max().item() <= bound and out_proj.abs().max().item() > 0.98 * bound
    assert out_proj.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert (
        0.2 < deep.layers[0].ffn.w2.weight.std() / Linear(deep.layers[0].ffn.w2.weight.shape[1], 64).weight.std() < 0.3
    )


def test_parameter_groups_exclude_ssm_parameters_from_decay():
    model = _lm()
    decay = {id(p) for p in parameter_groups(model, 0.1)[0]["params"]}
    for layer in model.layers:
        assert id(layer.mixer.A_log) not in decay and id(layer.mixer.D) not in decay


def test_bad_ffn_kind_and_bad_input_shape_are_value_errors():
    with pytest.raises(ValueError, match="ffn must be"):
        _lm(ffn="relu")
    with pytest.raises(ValueError, match="input_ids"):
        _lm()(torch.zeros(5, dtype=torch.long))


def test_loss_falls_on_repeat_pattern_task():
    # The period-8 pattern 0 1 0 2 0 3 0 4: what follows a 0 depends on the token before it, so the model must use
    # context (conv / SSM state), not just the current token. Rows start at random phases.
    torch.manual_seed(0)
    model = mamba_lm(8, 32, 2, d_state=8)
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.01), lr=1e-2)
    pattern = torch.tensor([0, 1, 0, 2, 0, 3, 0, 4])
    length, batch = 24, 8
    losses = []
    for _ in range(40):
        starts = torch.randint(0, 8, (batch, 1))
        seq = pattern[(starts + torch.arange(length + 1)) % 8]  # (batch, length + 1)
        loss = cross_entropy(model(seq[:, :-1])[:, 2:], seq[:, 3:])  # from position 2 on, all is predictable
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[:5]) / 5 > 1.5  # starts near log(8)
    assert sum(losses[-5:]) / 5 < 0.2  # ignoring context, log(4) / 2 = 0.69 is the best possible


def test_stability_switches_reach_every_block():
    model = _lm(dt_limit=(1e-4, 1.0), conv_norm=True, a_min_magnitude=0.1, decay_limit=(0.01, 0.9999), out_norm=True)
    for layer in model.layers:
        mixer = layer.mixer
        assert mixer.dt_limit == (1e-4, 1.0) and mixer.conv_norm is not None and mixer.out_norm is not None
        assert mixer.a_min_magnitude == 0.1 and mixer.decay_limit == (0.01, 0.9999)
    assert model(torch.randint(0, VOCAB, (1, 5))).isfinite().all()


def test_language_model_cast_to_bfloat16_keeps_ssm_parameters_float32_and_trains():
    model = _lm(ffn="swiglu").to(torch.bfloat16)
    for layer in model.layers:
        assert layer.mixer.A_log.dtype == layer.mixer.D.dtype == torch.float32
        assert layer.mixer.in_proj.weight.dtype == torch.bfloat16
    ids = torch.randint(0, VOCAB, (2, 8))
    logits = model(ids)
    assert logits.dtype == torch.bfloat16 and logits.isfinite().all()
    cross_entropy(logits[:, :-1].float(), ids[:, 1:]).backward()
    assert all(layer.mixer.A_log.grad.dtype == torch.float32 for layer in model.layers)


@pytest.mark.parametrize("name", ["out_norm", "conv_norm", "checkpoint_scan"])
def test_a_switch_that_is_not_a_boolean_is_a_clear_error(name):
    with pytest.raises(ValueError, match=f"ssm.{name} must be true or false"):
        _lm(**{name: "yes"})
