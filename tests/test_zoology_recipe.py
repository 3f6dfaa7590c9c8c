"""The GPT-2/Zoology switches of the model (study 11's recipe), each against an independent oracle.

- ``LayerNorm``, a biased ``Linear`` and ``dropout`` against ``torch.nn.functional``;
- the whole recipe (``norm_layer="layernorm"``, ``ffn.kind="identity"``, attention biases, learned positions, tied
  head) against Zoology's ``LMBackbone`` forward written out here with torch built-ins: its blocks carry the residual
  separately and return ``norm2(residual)``, which the next block (or the final norm) adds back;
- ``init="gpt2"`` against the stds Zoology's ``_init_weights`` draws;
- the bad values, each one named in a one-line error.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.models.language_model import LanguageModel
from cs336_basics.models.spec import AttentionSpec, FFNSpec, ModelSpec
from cs336_basics.nn.attention import scaled_dot_product_attention
from cs336_basics.nn.layers import Dropout, LayerNorm, Linear, dropout

VOCAB, D, T = 97, 32, 16


def recipe_spec(plan: str = "AA", **overrides) -> ModelSpec:
    attention = AttentionSpec(overrides.pop("num_heads", 2), positions="learned", bias=True,
                              dropout=overrides.pop("attention_dropout", 0.1))  # fmt: skip
    options = dict(norm_layer="layernorm", init="gpt2", embedding_dropout=0.1, tie_embeddings=True)
    options.update(overrides)
    return ModelSpec(VOCAB, D, plan, T, attention=attention, ffn=FFNSpec("identity"), **options).validate()


def test_layer_norm_matches_torch_with_a_trained_gain_and_bias():
    norm = LayerNorm(D)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(3, 5, D) * 4 + 2
    expected = F.layer_norm(x, (D,), norm.weight, norm.bias, eps=1e-5)
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)
    # In bf16: computed in float32 inside and rounded once. The float32 results of torch's kernel and ours differ in the
    # last bits, so a rounding can flip (a few elements in 1e4, one ulp); a norm computed in bf16 differs in about
    # half the elements, by up to a third.
    low = x.to(torch.bfloat16)
    expected_low = F.layer_norm(low.float(), (D,), norm.weight, norm.bias, eps=1e-5).to(torch.bfloat16)
    torch.testing.assert_close(norm(low), expected_low, rtol=torch.finfo(torch.bfloat16).eps, atol=1e-6)
    assert (norm(low) != expected_low).float().mean() < 0.02


def test_linear_with_bias_matches_torch_and_keeps_the_bias_free_layout_by_default():
    layer = Linear(D, 7, bias=True)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(4, D)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
    assert set(Linear(D, 7).state_dict()) == {"weight"}
    assert set(layer.state_dict()) == {"weight", "bias"}
    assert torch.equal(Linear(D, 7, bias=True).bias, torch.zeros(7))  # zero at init, as GPT-2 and Zoology


def test_dropout_is_inverted_and_off_in_eval():
    x = torch.ones(200_000)
    y = dropout(x, 0.1, training=True)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.005  # about p of the elements dropped
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))  # survivors scaled by 1 / (1 - p)
    assert torch.equal(dropout(x, 0.1, training=False), x)
    module = Dropout(0.5).eval()
    assert torch.equal(module(x), x)
    with pytest.raises(ValueError, match=r"dropout probability must be in \[0, 1\)"):
        Dropout(1.0)


def test_attention_dropout_drops_softmax_weights_then_rescales():
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    torch.manual_seed(7)
    out = scaled_dot_product_attention(q, k, v, dropout_p=0.25)
    torch.manual_seed(7)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    keep = torch.rand_like(weights) >= 0.25  # the same draw dropout makes
    torch.testing.assert_close(out, (weights * keep / 0.75) @ v)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v), torch.softmax(
        q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1) @ v)  # fmt: skip


def zoology_forward(model: LanguageModel, ids: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Logits of Zoology's ``LanguageModel`` (TransformerBlock with ``MHA`` and ``state_mixer=Identity``, no dropout),
    computed with torch built-ins from ``model``'s weights."""
    state = model.state_dict()
    table = state["token_embeddings.weight"]
    hidden = table[ids] + state["position_embeddings.weight"][: ids.shape[1]]
    residual = None
    for i in range(len(model.layers)):
        p = f"layers.{i}."

        def ln(name: str, x: torch.Tensor, p: str = p) -> torch.Tensor:
            return F.layer_norm(x, (D,), state[p + name + ".weight"], state[p + name + ".bias"], eps=1e-5)

        residual = hidden if residual is None else hidden + residual
        h = ln("ln1", residual)
        w = torch.cat([state[f"{p}attn.{n}_proj.weight"] for n in "qkv"])
        b = torch.cat([state[f"{p}attn.{n}_proj.bias"] for n in "qkv"])
        q, k, v = F.linear(h, w, b).view(*ids.shape, 3, num_heads, D // num_heads).permute(2, 0, 3, 1, 4)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(*ids.shape, D)
        residual = F.linear(heads, state[p + "attn.output_proj.weight"], state[p + "attn.output_proj.bias"]) + residual
        hidden = ln("ln2", residual)  # the identity state mixer returns norm2(residual)
    residual = hidden + residual
    out = F.layer_norm(residual, (D,), state["ln_final.weight"], state["ln_final.bias"], eps=1e-5)
    return out @ table.T  # tied head


def test_the_recipe_is_zoologys_transformer_block():
    torch.manual_seed(0)
    model = LanguageModel(recipe_spec())
    with torch.no_grad():  # move every gain and bias off its init so each term is checked
        for name, param in model.named_parameters():
            if name.endswith(("bias", "ln1.weight", "ln2.weight", "ln_final.weight")):
                param.add_(torch.randn_like(param) * 0.3)
    ids = torch.randint(0, VOCAB, (3, T))
    model.eval()  # dropout off, as in Zoology's evaluation
    torch.testing.assert_close(model(ids), zoology_forward(model, ids, 2), rtol=1e-4, atol=1e-4)


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    model = LanguageModel(recipe_spec())
    ids = torch.randint(0, VOCAB, (2, T))
    model.train()
    assert not torch.allclose(model(ids), model(ids))  # two dropout draws
    model.eval()
    torch.testing.assert_close(model(ids), model(ids))
    plain = LanguageModel(recipe_spec(embedding_dropout=0.0, attention_dropout=0.0)).train()
    torch.testing.assert_close(plain(ids), plain(ids))


def test_gpt2_init_draws_zoologys_stds():
    torch.manual_seed(0)
    spec = recipe_spec("AAAA", num_heads=1)
    model = LanguageModel(ModelSpec(4096, 256, "AAAA", 64, attention=spec.attention, ffn=FFNSpec("swiglu"),
                                    norm_layer="layernorm", init="gpt2", tie_embeddings=False))  # fmt: skip
    residual_std = 0.02 / math.sqrt(2 * 4)
    stds = {name: p.std().item() for name, p in model.named_parameters() if p.ndim == 2}
    for name, std in stds.items():
        expected = residual_std if name.endswith(("output_proj.weight", "w2.weight")) else 0.02
        assert std == pytest.approx(expected, rel=0.05), name
    assert all(torch.count_nonzero(p) == 0 for n, p in model.named_parameters() if n.endswith("proj.bias"))


def test_gpt2_init_leaves_other_blocks_and_the_default_init_untouched():
    def build(init: str) -> LanguageModel:
        torch.manual_seed(3)
        return LanguageModel(ModelSpec(VOCAB, D, "AM", T, init=init, attention=AttentionSpec(2)))

    default, gpt2 = build("cs336"), build("gpt2")
    for (name, a), (_, b) in zip(default.named_parameters(), gpt2.named_parameters(), strict=True):
        if a.ndim == 2:  # weight matrices and tables (norm gains are ones either way)
            assert torch.equal(a, b) == name.startswith("layers.1."), name  # only the Mamba layer keeps its draw
    std = D**-0.5  # the default's truncated normals are unchanged (the golden losses pin them too)
    torch.manual_seed(3)
    tied = LanguageModel(ModelSpec(VOCAB, D, "A", T, tie_embeddings=True, attention=AttentionSpec(2)))
    assert tied.token_embeddings.weight.abs().max() <= 3 * std + 1e-6


def test_identity_ffn_adds_the_normalised_stream():
    torch.manual_seed(0)
    spec = ModelSpec(VOCAB, D, "A", T, norm_layer="layernorm", attention=AttentionSpec(2), ffn=FFNSpec("identity"))
    block = LanguageModel(spec.validate()).layers[0]
    x = torch.randn(2, T, D)
    after_attention = x + block.attn(block.ln1(x))
    torch.testing.assert_close(block(x), after_attention + block.ln2(after_attention))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"norm_layer": "batchnorm"}, "norm_layer must be one of"),
        ({"init": "xavier"}, "init must be one of"),
        ({"embedding_dropout": 1.0}, r"embedding_dropout must be a probability in \[0, 1\)"),
        ({"attention": AttentionSpec(2, dropout=-0.1)}, r"attention.dropout must be a probability"),
        ({"attention": AttentionSpec(2, bias="yes")}, "attention.bias must be true or false"),
        ({"ffn": FFNSpec("identity", d_ff=64)}, "ffn kind 'identity' has no width or experts"),
    ],
)
def test_bad_recipe_values_are_named(overrides, message):
    options = {"attention": AttentionSpec(2), **overrides}
    with pytest.raises(ValueError, match=message):
        ModelSpec(VOCAB, D, "A", T, **options).validate()


@pytest.mark.parametrize("plan", ["AM", "H"])
def test_identity_ffn_builds_in_every_block_type(plan):
    spec = ModelSpec(VOCAB, D, plan, T, attention=AttentionSpec(2), ffn=FFNSpec("identity"), init="gpt2").validate()
    model = LanguageModel(spec)
    assert model(torch.randint(0, VOCAB, (2, T))).shape == (2, T, VOCAB)
    assert not any(".ffn." in name for name, _ in model.named_parameters())  # no weights of its own


@pytest.mark.parametrize("fusion", ["paper", "projected"])
def test_hymba_heads_take_the_attention_bias_and_dropout(fusion):
    """``attention.bias`` and ``attention.dropout`` reach the attention heads of ``H`` blocks, as of ``A`` blocks."""
    from cs336_basics.models.spec import HymbaSpec

    torch.manual_seed(0)

    def hymba(bias: bool, p: float) -> LanguageModel:
        attention = AttentionSpec(2, bias=bias, dropout=p)
        spec = ModelSpec(VOCAB, D, "HH", T, num_meta_tokens=2, attention=attention, hymba=HymbaSpec(fusion=fusion))
        return LanguageModel(spec.validate())

    plain, model = hymba(False, 0.0), hymba(True, 0.5)
    for layer in model.layers:
        for proj in (layer.attn.q_proj, layer.attn.k_proj, layer.attn.v_proj):
            assert proj.bias is not None and proj.bias.shape == (proj.weight.shape[0],)
    assert all(p.bias is None for layer in plain.layers for p in (layer.attn.q_proj, layer.attn.k_proj))
    ids = torch.randint(0, VOCAB, (2, T))
    model.train()
    assert not torch.allclose(model(ids), model(ids))  # the only randomness is the attention dropout
    for layer in model.layers:
        layer.attn.dropout = 0.0
    torch.testing.assert_close(model(ids), model(ids))
    model.eval()
    for layer in model.layers:
        layer.attn.dropout = 0.5
    torch.testing.assert_close(model(ids), model(ids))  # off in eval


@pytest.mark.parametrize("positions", ["rope", "learned", "none"])
def test_hymba_heads_follow_the_position_setting(positions):
    """``attention.positions`` reaches ``H`` heads as ``A`` heads: RoPE only for "rope", the shell's table for
    "learned", nothing for "none" (an unbounded model, as a NoPE Transformer)."""
    spec = ModelSpec(VOCAB, D, "HA", T, num_meta_tokens=2, attention=AttentionSpec(2, positions=positions))
    model = LanguageModel(spec.validate())
    hymba, attention = model.layers
    assert (hymba.attn.rope is not None) == (attention.attn.rope is not None) == (positions == "rope")
    assert model.learned_positions == (positions == "learned")
    assert (model.context_length is None) == (positions == "none")
    assert model(torch.randint(0, VOCAB, (2, T))).shape == (2, T, VOCAB)
