"""Specification of cs336_basics.models.transformer: block, LM, ablation switches, causality, FLOPs.

Oracle: a torch-native Transformer written here from nn.functional (F.linear, F.rms_norm, F.silu,
F.scaled_dot_product_attention, complex-number RoPE), run on the same weights.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cs336_basics.models.base import count_parameters
from cs336_basics.models.factory import transformer_lm
from cs336_basics.models.flops import transformer_flops_per_token
from cs336_basics.models.transformer import TransformerBlock
from tests.adapters import run_transformer_block, run_transformer_lm
from tests.test_nn_attention import complex_rope

VOCAB, CONTEXT, D_MODEL, HEADS, D_FF, THETA = 40, 16, 32, 4, 48, 10000.0


def torch_block(x: torch.Tensor, w: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """Pre-norm block from nn.functional: z = x + MHA(RMSNorm(x)); y = z + SwiGLU(RMSNorm(z))."""
    B, T, D = x.shape
    h = F.rms_norm(x, (D,), w[prefix + "ln1.weight"], eps=1e-5)
    split = lambda t: t.view(B, T, HEADS, D // HEADS).transpose(1, 2)  # (B, H, T, hd)
    q, k, v = (split(F.linear(h, w[f"{prefix}attn.{n}_proj.weight"])) for n in "qkv")
    q, k = complex_rope(q, torch.arange(T), THETA), complex_rope(k, torch.arange(T), THETA)
    attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
    z = x + F.linear(attn, w[prefix + "attn.output_proj.weight"])
    h = F.rms_norm(z, (D,), w[prefix + "ln2.weight"], eps=1e-5)
    gate = F.silu(F.linear(h, w[prefix + "ffn.w1.weight"])) * F.linear(h, w[prefix + "ffn.w3.weight"])
    return z + F.linear(gate, w[prefix + "ffn.w2.weight"])


def torch_lm(ids: torch.Tensor, w: dict[str, torch.Tensor], num_layers: int) -> torch.Tensor:
    x = F.embedding(ids, w["token_embeddings.weight"])
    for i in range(num_layers):
        x = torch_block(x, w, prefix=f"layers.{i}.")
    return F.linear(F.rms_norm(x, (D_MODEL,), w["ln_final.weight"], eps=1e-5), w["lm_head.weight"])


def random_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state with every tensor replaced by fresh noise (norm gains too, so they matter)."""
    state = module.state_dict()
    return {k: torch.randn_like(v) * (1.0 if v.ndim == 1 else v.shape[-1] ** -0.5) for k, v in state.items()}


def test_transformer_block_matches_torch_native_block():
    weights = random_state(TransformerBlock.standalone(D_MODEL, HEADS, D_FF, CONTEXT, THETA))
    x = torch.randn(2, 9, D_MODEL)
    out = run_transformer_block(D_MODEL, HEADS, D_FF, CONTEXT, THETA, weights, x)
    torch.testing.assert_close(out, torch_block(x, weights), rtol=1e-4, atol=1e-4)


def test_transformer_lm_matches_torch_native_lm_on_a_short_sequence():
    weights = random_state(transformer_lm(VOCAB, CONTEXT, D_MODEL, 2, HEADS, D_FF, rope_theta=THETA))
    ids = torch.randint(0, VOCAB, (3, 11))  # shorter than the context
    out = run_transformer_lm(VOCAB, CONTEXT, D_MODEL, 2, HEADS, D_FF, THETA, weights, ids)
    torch.testing.assert_close(out, torch_lm(ids, weights, 2), rtol=1e-4, atol=1e-4)


def test_transformer_lm_state_dict_keys_are_the_adapter_layout():
    model = transformer_lm(VOCAB, CONTEXT, D_MODEL, 2, HEADS, D_FF)
    per_layer = ["attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.output_proj", "ln1", "ln2", "ffn.w1", "ffn.w2"]
    per_layer.append("ffn.w3")
    expected = {"token_embeddings.weight", "ln_final.weight", "lm_head.weight"}
    expected |= {f"layers.{i}.{name}.weight" for i in range(2) for name in per_layer}
    state = model.state_dict()
    assert set(state) == expected
    assert state["layers.1.ffn.w2.weight"].shape == (D_MODEL, D_FF)
    assert state["lm_head.weight"].shape == (VOCAB, D_MODEL)


def test_learned_positions_add_a_context_by_d_model_table():
    model = transformer_lm(VOCAB, CONTEXT, D_MODEL, 1, HEADS, positions="learned")
    assert model.state_dict()["position_embeddings.weight"].shape == (CONTEXT, D_MODEL)
    assert count_parameters(model)["embedding"] == (VOCAB + CONTEXT) * D_MODEL


def test_learned_position_table_starts_at_the_chosen_std():
    """GPT-2's 0.02 by default; ``attention.position_std`` (Zoology's equal scale) is honoured; bad values are named."""
    from cs336_basics.models.language_model import LanguageModel
    from cs336_basics.models.spec import AttentionSpec, ModelSpec

    def table_std(**attention) -> float:
        torch.manual_seed(0)
        spec = ModelSpec(vocab_size=VOCAB, d_model=64, plan="A", context_length=512,
                         attention=AttentionSpec(positions="learned", **attention))  # fmt: skip
        return LanguageModel(spec).position_embeddings.weight.std().item()

    assert table_std() == pytest.approx(0.02 * 0.986, rel=0.03)  # truncated at 3 std: 0.986 of the std
    assert table_std(position_std=0.125) == pytest.approx(0.125 * 0.986, rel=0.03)
    with pytest.raises(ValueError, match="position_std"):
        table_std(position_std=0)


def test_tied_embeddings_share_one_matrix_counted_once():
    untied = transformer_lm(VOCAB, CONTEXT, D_MODEL, 1, HEADS)
    tied = transformer_lm(VOCAB, CONTEXT, D_MODEL, 1, HEADS, tie_embeddings=True)
    assert tied.lm_head.weight is tied.token_embeddings.weight
    assert count_parameters(untied)["total"] - count_parameters(tied)["total"] == VOCAB * D_MODEL


@pytest.mark.parametrize("d_model", [128, 192])
def test_silu_ffn_has_the_same_parameter_count_as_swiglu_by_default(d_model):
    # 192: 8/3 d_model = 512 is already a multiple of 64; 128: it rounds up (341 -> 384), where 4 d_model (512) would
    # leave the SiLU model 65,536 parameters short.
    swiglu = transformer_lm(VOCAB, CONTEXT, d_model, 2, HEADS, ffn="swiglu")
    silu = transformer_lm(VOCAB, CONTEXT, d_model, 2, HEADS, ffn="silu")
    assert count_parameters(swiglu) == count_parameters(silu)


def test_post_norm_and_no_norm_drop_the_final_norm():
    assert "ln_final.weight" not in transformer_lm(VOCAB, CONTEXT, D_MODEL, 1, HEADS, norm="post").state_dict()
    no_norm = transformer_lm(VOCAB, CONTEXT, D_MODEL, 1, HEADS, norm="none").state_dict()
    assert not any("ln" in key for key in no_norm)


SWITCHES = list(
    itertools.product(["pre", "post", "none"], ["rope", "learned", "none"], ["swiglu", "silu"], ["naive", "torch_sdpa"])
)


@pytest.mark.parametrize(("norm", "positions", "ffn", "backend"), SWITCHES)
@pytest.mark.parametrize("tie", [False, True])
def test_future_tokens_never_change_past_logits(norm, positions, ffn, backend, tie):
    model = transformer_lm(
        VOCAB, 8, 16, 2, 2, norm=norm, positions=positions, ffn=ffn, attn_backend=backend, tie_embeddings=tie
    )
    ids = torch.randint(0, VOCAB, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (ids[:, 5:] + 1) % VOCAB
    before, after = model(ids), model(changed)
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before[:, 5:], after[:, 5:])


@pytest.mark.parametrize("positions", ["rope", "learned", "none"])
def test_kv_cache_forward_matches_full_forward(positions):
    model = transformer_lm(VOCAB, CONTEXT, D_MODEL, 2, HEADS, positions=positions)
    ids = torch.randint(0, VOCAB, (2, 12))
    cache = model.make_cache(batch_size=2, max_seq_len=12)
    pieces = [model(ids[:, :7], cache=cache)] + [model(ids[:, t : t + 1], cache=cache) for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), model(ids), rtol=1e-4, atol=1e-5)


def test_sequences_longer_than_the_context_are_rejected():
    model = transformer_lm(VOCAB, 8, 16, 1, 2)
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="context_length"):
        model.make_cache(1, 9)


@pytest.mark.parametrize(("kwargs", "message"), [({"norm": "layer"}, "norm"), ({"positions": "alibi"}, "positions")])
def test_lm_rejects_unknown_switches(kwargs, message):
    with pytest.raises(ValueError, match=message):
        transformer_lm(VOCAB, CONTEXT, D_MODEL, 1, HEADS, **kwargs)


@pytest.mark.parametrize("ffn", ["swiglu", "silu"])
def test_flops_formula_matches_torch_flop_counter(ffn):
    seq_len, num_layers = 12, 2
    model = transformer_lm(VOCAB, CONTEXT, D_MODEL, num_layers, HEADS, ffn=ffn)
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(0, VOCAB, (1, seq_len)))
    flops = transformer_flops_per_token(D_MODEL, num_layers, seq_len, VOCAB, ffn=ffn)
    assert flops["forward"] * seq_len == counter.get_total_flops()
    assert flops["training"] == 3 * flops["forward"]


def test_flops_are_about_six_n_per_token_for_short_contexts():
    model = transformer_lm(2000, 64, 256, 2, 4, d_ff=688)
    non_embedding = count_parameters(model)["non_embedding"]  # includes the untied lm_head
    flops = transformer_flops_per_token(256, 2, 1, 2000, d_ff=688)
    assert flops["training"] == pytest.approx(6 * non_embedding, rel=0.005)
