"""``attention.short_conv``: a causal depthwise convolution before attention, checked against ``torch``'s conv1d and
against token-by-token decoding with the cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.models.language_model import LanguageModel
from cs336_basics.models.spec import AttentionSpec, FFNSpec, ModelSpec
from cs336_basics.models.transformer import TransformerBlock


def block(kernel: int) -> TransformerBlock:
    torch.manual_seed(0)
    spec = ModelSpec(50, 16, "A", 32, attention=AttentionSpec(2, short_conv=kernel), ffn=FFNSpec("none"))
    return TransformerBlock(spec.validate(), 0)


def test_the_attention_input_is_torchs_causal_depthwise_conv():
    b, k = block(4), 4
    h = torch.randn(3, 10, 16)
    torch_conv = F.conv1d(F.pad(h.transpose(1, 2), (k - 1, 0)), b.short_conv.weight[:, None, :], b.short_conv.bias,
                          groups=16).transpose(1, 2)  # fmt: skip
    torch.testing.assert_close(b._mix(h, None), b.attn(torch_conv, None, None))
    assert not torch.allclose(b._mix(h, None), b.attn(h, None, None))  # the conv changes what attention sees


def test_no_short_conv_keeps_the_adapter_keys_and_a_kernel_adds_its_own():
    assert not any(key.startswith("short_conv") for key in block(0).state_dict())
    assert {"short_conv.weight", "short_conv.bias"} <= set(block(3).state_dict())
    assert block(3).state_dict()["short_conv.weight"].shape == (16, 3)


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_cached_decoding_matches_the_full_forward(norm):
    torch.manual_seed(1)
    spec = ModelSpec(40, 16, "AA", 24, norm=norm, attention=AttentionSpec(2, short_conv=3))
    model = LanguageModel(spec.validate()).eval()
    ids = torch.randint(0, 40, (2, 12))
    full = model(ids)
    cache = model.make_cache(2)
    first = model(ids[:, :5], cache)  # a prefill of 5, then one token at a time
    steps = [model(ids[:, t : t + 1], cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad", [-1, 2.5])
def test_a_bad_kernel_is_refused(bad):
    with pytest.raises(ValueError, match="attention.short_conv must be a kernel size"):
        ModelSpec(50, 16, "A", 32, attention=AttentionSpec(2, short_conv=bad)).validate()


@pytest.mark.parametrize("plan", ["H", "MM", "HM"])
def test_a_plan_without_attention_layers_refuses_it(plan):
    """Only ``A`` blocks build the convolution: elsewhere the setting would be silently ignored."""
    with pytest.raises(ValueError, match=f"plan '{plan}' has none; remove it"):
        ModelSpec(50, 16, plan, 32, attention=AttentionSpec(2, short_conv=4)).validate()
    ModelSpec(50, 16, plan + "A", 32, attention=AttentionSpec(2, short_conv=4)).validate()  # one A layer is enough
