"""Specification of the Hymba-style parallel attention + SSM heads model (``hymba_lm``).

Oracles: the paper's fusion formula written here with nn.functional (``F.rms_norm``, ``F.linear``), hand-written
masks, schedules and parameter counts, Hymba-1.5B's published ``kv_reuse_group``, and full forward passes for cached
decoding.
"""

import io
import json

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.models.base import parameter_groups
from cs336_basics.models.factory import hymba_lm, transformer_lm
from cs336_basics.models.hymba import branch_shares
from cs336_basics.models.spec import AttentionSpec, HymbaSpec, ModelSpec
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
    "projected": {"hymba_fusion": "projected", "num_meta_tokens": 2},
    "kv_sharing": {"num_layers": 4, "window": 3, "global_layers": [0], "num_meta_tokens": 2, "kv_sharing": True},
    "ssm_branch_only": {"hymba_branches": "ssm", "num_meta_tokens": 2},
    "attention_branch_only": {"hymba_branches": "attention", "window": 3, "global_layers": [1], "num_meta_tokens": 2},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_perturbing_future_tokens_leaves_past_logits_unchanged(variant):
    model = hymba_lm(**{**TINY, **VARIANTS[variant]})
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


@pytest.mark.parametrize("variant", VARIANTS)
def test_incremental_decoding_matches_full_forward(variant):
    model = hymba_lm(**{**TINY, **VARIANTS[variant]})
    ids = torch.randint(0, 20, (2, 9))
    cache = model.make_cache(2, 16)
    pieces = [model(ids[:, :5], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(5, 9)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(ids), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_round_trip_gives_identical_logits(variant):
    model = hymba_lm(**{**TINY, **VARIANTS[variant]})
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(5)
    fresh = hymba_lm(**{**TINY, **VARIANTS[variant]})
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    ids = torch.randint(0, 20, (2, 7))
    torch.testing.assert_close(fresh(ids), model(ids), rtol=0, atol=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_loss_falls_on_a_tiny_learnable_task(variant):
    """25 AdamW steps on the successor task (next token = token + 1 mod V) cut the loss tenfold."""
    torch.manual_seed(0)
    model = hymba_lm(**{**TINY, **VARIANTS[variant]})
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


# --- sliding windows keep the meta tokens visible -------------------------------------------------------------------


def test_a_sliding_layer_sees_the_meta_tokens_but_not_tokens_outside_its_window():
    """Window 2, no global layer, 2 meta tokens: layer-0 attention at token 7 sees the meta tokens and tokens 6-7."""
    model = hymba_lm(**TINY, window=2, global_layers=[], num_meta_tokens=2)
    seen = []
    model.layers[0].attn.register_forward_hook(lambda m, i, o: seen.append(o))
    ids = torch.randint(0, 20, (1, 8))
    changed = ids.clone()
    changed[:, 0] = (ids[:, 0] + 1) % 20
    model(ids)
    model(changed)
    with torch.no_grad():
        model.meta_tokens.add_(1.0)
    model(ids)
    last = 2 + 7  # token 7 sits after the two meta tokens
    torch.testing.assert_close(seen[0][:, last], seen[1][:, last])  # token 0 is outside the window
    assert not torch.allclose(seen[0][:, last], seen[2][:, last])  # the meta tokens are not


# --- the paper's layer schedule -------------------------------------------------------------------------------------


def test_the_default_schedule_is_sliding_except_first_middle_and_last():
    def windows(model):
        return [layer.attn.window for layer in model.layers]

    # context 16 -> default window 8 (half the context); global layers: 0, n // 2, n - 1
    assert windows(hymba_lm(**{**TINY, "num_layers": 4})) == [None, 8, None, None]
    assert windows(hymba_lm(**{**TINY, "num_layers": 8})) == [None, 8, 8, 8, None, 8, 8, None]
    assert windows(hymba_lm(**{**TINY, "num_layers": 8, "window": 5})) == [None, 5, 5, 5, None, 5, 5, None]
    assert windows(hymba_lm(**{**TINY, "num_layers": 8, "window": None})) == [None] * 8  # the all-global switch
    transformer = transformer_lm(20, 16, 16, 4, 2)
    assert [block.attn.window for block in transformer.layers] == [None] * 4  # "auto" leaves A layers global


def test_config_window_null_is_all_global_and_old_flat_configs_keep_their_model(tmp_path):
    from assignment_experiments.config import config_from_dict

    typed = {"architecture": "hymba", "num_layers": 4, "context_length": 16, "d_model": 16}
    assert config_from_dict({"model": typed}).model.attention.window == "auto"
    config = config_from_dict({"model": {**typed, "attention": {"window": None}}})
    assert [config.model.spec(20).attention_window(i) for i in range(4)] == [None] * 4
    # a run directory written before the paper defaults (flat keys) loads the model it trained: all global, projected
    flat = config_from_dict({"model": {**typed, "num_heads": 2, "options": {"num_meta_tokens": 2}}}).model
    assert flat.attention.window is None and flat.hymba.fusion == "projected"
    assert config_from_dict({"model": {**typed, "num_heads": 2, "window": 4}}).model.attention.window == 4


# --- fusion as published --------------------------------------------------------------------------------------------


def test_paper_fusion_is_the_published_formula():
    """y = W_out((beta_a * rmsnorm(attn(h)) + beta_s * rmsnorm(ssm(h))) / 2), both branches at width I = expand*d."""
    model = hymba_lm(**TINY)
    layer = model.layers[0]
    inner = 2 * 16
    with torch.no_grad():
        layer.beta_attn.copy_(torch.rand(inner) + 0.5)
        layer.beta_ssm.copy_(torch.rand(inner) + 0.5)
    x = torch.randn(2, 7, 16)
    h = layer.norm(x)
    a, s = layer.attn(h), layer.mixer(h)
    assert a.shape == s.shape == (2, 7, inner)  # no attention output projection, no Mamba out_proj
    fused = layer.beta_attn * F.rms_norm(a, (inner,), eps=1e-5) + layer.beta_ssm * F.rms_norm(s, (inner,), eps=1e-5)
    expected = F.linear(fused / 2, layer.out_proj.weight)
    torch.testing.assert_close(layer.fuse(x, None), expected, rtol=1e-5, atol=1e-6)


def test_paper_fusion_has_one_output_projection_and_one_scale_per_channel():
    d, inner, heads = 16, 32, 2
    paper, projected = hymba_lm(**TINY), hymba_lm(**TINY, hymba_fusion="projected")
    keys = {k.removeprefix("layers.0.") for k in paper.state_dict() if k.startswith("layers.0.")}
    assert "attn.output_proj.weight" not in keys and "mixer.out_proj.weight" not in keys
    assert not any(k.startswith(("attn_norm", "ssm_norm")) for k in keys)  # beta is the only scale
    assert {k for k in keys if "proj" in k and not k.startswith("mixer")} == {
        "attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight", "out_proj.weight"
    }  # fmt: skip
    assert paper.layers[0].out_proj.weight.shape == (d, inner)
    assert paper.layers[0].attn.q_proj.weight.shape == (inner, d) and paper.layers[0].attn.head_dim == inner // heads

    def per_layer(model):
        return sum(p.numel() for p in model.layers[0].parameters())

    # paper - projected, by hand: Q/K/V grow from d x d to I x d (+3 d (I - d)); the attention output projection
    # (d x d), the Mamba out_proj (d x I) and the norm gains (2 d) go; out_proj grows from d x d to d x I; beta from
    # d to I per branch.
    by_hand = 3 * d * (inner - d) - d * d - d * inner - 2 * d + d * (inner - d) + 2 * (inner - d)
    assert per_layer(paper) - per_layer(projected) == by_hand


def test_projected_fusion_is_the_earlier_layout():
    """Attention with its output projection, the Mamba out_proj, norm gains times beta, an extra d x d projection."""
    model = hymba_lm(**TINY, hymba_fusion="projected")
    layer = model.layers[0]
    with torch.no_grad():
        layer.attn_norm.weight.copy_(torch.rand(16) + 0.5)
        layer.beta_ssm.copy_(torch.rand(16) + 0.5)
    x = torch.randn(2, 7, 16)
    h = layer.norm(x)
    a = F.rms_norm(layer.attn(h), (16,), layer.attn_norm.weight, eps=1e-5) * layer.beta_attn
    s = F.rms_norm(layer.mixer(h), (16,), layer.ssm_norm.weight, eps=1e-5) * layer.beta_ssm
    torch.testing.assert_close(layer.fuse(x, None), F.linear((a + s) / 2, layer.out_proj.weight), rtol=1e-5, atol=1e-6)
    assert layer.out_proj.weight.shape == (16, 16) and layer.mixer.out_proj.weight.shape == (16, 32)


def test_bad_fusion_is_a_clear_error():
    with pytest.raises(ValueError, match="hymba.fusion"):
        hymba_lm(**TINY, hymba_fusion="gated")


@pytest.mark.parametrize(("branches", "absent"), [("ssm", "attn"), ("attention", "ssm")])
@pytest.mark.parametrize("fusion", ["paper", "projected"])
def test_a_one_branch_layer_is_the_two_branch_layer_with_the_other_beta_held_at_zero(branches, absent, fusion):
    """Oracle: the two-branch model with the absent branch's beta at zero; its loss and every shared gradient agree."""
    options = {**TINY, "num_meta_tokens": 2, "hymba_fusion": fusion}
    both, one = hymba_lm(**options), hymba_lm(**options, hymba_branches=branches)
    module = "attn" if absent == "attn" else "mixer"
    own = one.state_dict()
    assert not any(f".{module}." in k or f"beta_{absent}" in k or f"{absent}_norm" in k for k in own)
    missing, unexpected = both.load_state_dict(own, strict=False)
    assert not unexpected and missing and all(f".{module}." in k or absent in k for k in missing)
    with torch.no_grad():
        for layer in both.layers:
            getattr(layer, f"beta_{absent}").zero_()
            layer.beta_attn.add_(torch.rand_like(layer.beta_attn))  # both betas away from their init of one
            layer.beta_ssm.add_(torch.rand_like(layer.beta_ssm))
            getattr(layer, f"beta_{absent}").zero_()
    one.load_state_dict({k: v for k, v in both.state_dict().items() if k in own})
    ids = torch.randint(0, 20, (2, 9))
    loss_both, loss_one = cross_entropy(both(ids), ids), cross_entropy(one(ids), ids)
    torch.testing.assert_close(loss_one, loss_both, rtol=1e-6, atol=1e-6)
    loss_both.backward()
    loss_one.backward()
    grads = dict(both.named_parameters())
    for name, p in one.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-5, atol=1e-7, msg=name)
    assert all(layer.diagnostics() == {} for layer in one.layers)  # no share to report with one branch


def test_branches_is_checked_and_kv_sharing_needs_the_attention_branch():
    with pytest.raises(ValueError, match="hymba.branches"):
        hymba_lm(**TINY, hymba_branches="mamba")
    with pytest.raises(ValueError, match="kv_sharing.*no attention"):
        hymba_lm(**{**TINY, "num_layers": 4}, window=3, global_layers=[0], kv_sharing=True, hymba_branches="ssm")


# --- cross-layer KV sharing -----------------------------------------------------------------------------------------


def test_kv_sharing_groups_match_hymba_1_5b():
    """Hymba-1.5B (32 layers, global 0/15/31) publishes kv_reuse_group [[1,2],...,[13,14],[16,17,18],...,[29,30]]."""
    spec = ModelSpec(
        20, 16, "H" * 32, 16, attention=AttentionSpec(global_layers=[0, 15, 31]), hymba=HymbaSpec(kv_sharing=True)
    )
    groups = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [16, 17, 18]]
    groups += [[19, 20], [21, 22], [23, 24], [25, 26], [27, 28], [29, 30]]
    expected = list(range(32))
    for group in groups:
        for layer in group:
            expected[layer] = group[0]
    assert [spec.kv_producer(i) for i in range(32)] == expected
    assert [ModelSpec(20, 16, "H" * 32, 16).kv_producer(i) for i in range(32)] == list(range(32))  # off by default


def test_a_kv_consumer_attends_over_its_producers_keys():
    """Layer 2 (consumer of layer 1) has only a Q projection and attends over layer 1's post-RoPE K/V."""
    model = hymba_lm(**{**TINY, **VARIANTS["kv_sharing"]})
    producer, consumer = model.layers[1], model.layers[2]
    assert consumer.attn.k_proj is None and consumer.attn.v_proj is None and producer.attn.k_proj is not None
    inputs = {}
    for i in (1, 2):
        model.layers[i].attn.register_forward_hook(lambda m, args, out, i=i: inputs.__setitem__(i, (args[0], out)))
    model(torch.randint(0, 20, (2, 8)))
    (h1, _), (h2, out2) = inputs[1], inputs[2]
    T, heads, hd = h1.shape[1], 2, 16 * 2 // 2
    split = lambda t: t.view(2, T, heads, hd).transpose(1, 2)  # (B, H, T, hd)
    rope = producer.attn.rope
    k = rope(split(F.linear(h1, producer.attn.k_proj.weight)), torch.arange(T))
    v = split(F.linear(h1, producer.attn.v_proj.weight))
    q = rope(split(F.linear(h2, consumer.attn.q_proj.weight)), torch.arange(T))
    mask = torch.ones(T, T, dtype=torch.bool).tril() & ~torch.ones(T, T, dtype=torch.bool).tril(-3)
    mask[:, :2] |= torch.ones(T, 2, dtype=torch.bool).tril()  # window 3; the 2 meta tokens stay visible
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(2, T, heads * hd)
    torch.testing.assert_close(out2, expected, rtol=1e-4, atol=1e-5)
    assert producer.attn.last_kv is None  # the group's last consumer released the kept keys


def test_kv_sharing_saves_the_consumers_projections_and_cache():
    d, inner = 16, 32
    shared = hymba_lm(**{**TINY, **VARIANTS["kv_sharing"]})
    plain = hymba_lm(**{**TINY, **{k: v for k, v in VARIANTS["kv_sharing"].items() if k != "kv_sharing"}})
    count = lambda m: sum(p.numel() for p in m.parameters())
    # layers 1-3 are non-global: one group [1, 2, 3] (an odd run), so layers 2 and 3 consume layer 1's K/V
    consumers = sum(layer.shares_kv for layer in shared.layers)
    assert consumers == 2
    assert count(plain) - count(shared) == consumers * 2 * inner * d  # no K and V projections (I x d each)
    cache_bytes = lambda m: sum(
        s.own[0].keys.nbytes + s.own[0].values.nbytes for s in m.make_cache(2, 16).layers if s.own[0] is not None
    )
    assert cache_bytes(shared) * 4 == cache_bytes(plain) * 2  # 2 of 4 layers keep a KV cache


def test_kv_sharing_needs_an_all_hymba_plan():
    from cs336_basics.models.spec import FFNSpec

    with pytest.raises(ValueError, match="kv_sharing"):
        ModelSpec(20, 16, "HA", 16, ffn=FFNSpec(), hymba=HymbaSpec(kv_sharing=True)).validate()


# --- branch shares --------------------------------------------------------------------------------------------------


def test_branch_shares_by_hand():
    beta_a, beta_s = torch.tensor([1.0, 3.0]), torch.tensor([-2.0, 2.0])  # mean |.|: 2 and 2
    gain_a, gain_s = torch.tensor([2.0, 2.0]), torch.tensor([0.5, 0.5])  # effective: 4 and 1
    shares = branch_shares(beta_a, beta_s, gain_a, gain_s)
    assert shares["beta_share_attn"] == pytest.approx(0.5)
    assert shares["scale_share_attn"] == pytest.approx(0.8) and shares["scale_share_ssm"] == pytest.approx(0.2)
    assert branch_shares(beta_a, beta_s)["scale_share_attn"] == pytest.approx(0.5)  # no gains: beta alone


def test_model_diagnostics_report_the_gain_aware_share():
    paper = hymba_lm(**TINY)
    with torch.no_grad():
        paper.layers[1].beta_attn.fill_(3.0)
    diagnostics = paper.diagnostics()
    assert diagnostics["hymba/layer0/scale_share_attn"] == pytest.approx(0.5)
    assert diagnostics["hymba/layer1/scale_share_attn"] == pytest.approx(0.75)  # paper: no gains, beta is the scale
    assert diagnostics["hymba/layer1/beta_share_attn"] == pytest.approx(0.75)
    projected = hymba_lm(**TINY, hymba_fusion="projected")
    with torch.no_grad():
        projected.layers[0].attn_norm.weight.fill_(3.0)  # a gain the beta-only proxy does not see
    diagnostics = projected.diagnostics()
    assert diagnostics["hymba/layer0/beta_share_attn"] == pytest.approx(0.5)
    assert diagnostics["hymba/layer0/scale_share_attn"] == pytest.approx(0.75)
    assert diagnostics["hymba/layer0/scale_share_ssm"] == pytest.approx(0.25)


@pytest.mark.parametrize("fusion", ["paper", "projected"])
def test_branch_share_study_reports_the_models_own_shares(fusion, tmp_path, capsys):
    from assignment_experiments.studies.hymba_branch_shares import main
    from cs336_basics.training.checkpoint import save_checkpoint

    model = hymba_lm(**TINY, hymba_fusion=fusion)
    with torch.no_grad():
        model.layers[1].beta_ssm.mul_(2.0)
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    save_checkpoint(model, None, 3, tmp_path / "run" / "checkpoints" / "step_0000003.pt")
    assert main([str(tmp_path / "run")]) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines()[2:]]
    diagnostics = model.diagnostics()
    assert len(rows) == len(model.layers)  # one row per layer: the changed layer 1 among them
    for layer, row in enumerate(rows):
        assert float(row[4]) == pytest.approx(diagnostics[f"hymba/layer{layer}/scale_share_attn"], abs=5e-4)
        assert float(row[6]) == pytest.approx(diagnostics[f"hymba/layer{layer}/beta_share_attn"], abs=5e-4)
    assert main([str(tmp_path / "missing")]) == 2
    save_checkpoint(
        hymba_lm(**TINY, hymba_branches="ssm"), None, 3, tmp_path / "one" / "checkpoints" / "step_0000003.pt"
    )
    assert main([str(tmp_path / "one")]) == 2
    assert "no two-branch Hymba layers" in capsys.readouterr().err


def test_mqar_suites_give_hymba_meta_tokens():
    from pathlib import Path

    suites = Path(__file__).resolve().parents[1] / "assignment_experiments" / "configs" / "suites"
    checked = 0
    for path in sorted(suites.glob("associative_recall*.json")):
        for run in json.loads(path.read_text())["runs"]:
            if run["set"].get("model.architecture") == "hymba":
                context = run["set"]["model.context_length"]
                assert run["set"]["model.num_meta_tokens"] == context // 16, (path.name, run["name"])
                checked += 1
    assert checked > 0, "no Hymba run found in the associative_recall suites"


@pytest.mark.parametrize("backend", ["naive", "torch_sdpa"])
def test_cached_decoding_with_windows_meta_tokens_and_kv_sharing_equals_the_full_forward(backend, sdpa_calls):
    model = hymba_lm(**{**TINY, **VARIANTS["kv_sharing"], "attn_backend": backend})
    ids = torch.randint(0, 20, (2, 12))
    cache = model.make_cache(2, 16)
    assert [state.own[0] is None for state in cache.layers] == [False, False, True, True]  # consumers keep no cache
    pieces = [model(ids[:, :4], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(4, 12)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(ids), rtol=1e-4, atol=1e-4)
    assert bool(sdpa_calls) == (backend == "torch_sdpa")  # the fused kernel ran when selected, and only then
