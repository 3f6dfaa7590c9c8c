"""build_model: names map to the right classes with the given sizes; bad names and arguments fail in one line."""

from __future__ import annotations

import pytest
import torch

from cs336_basics.models.factory import build_model
from cs336_basics.models.language_model import LanguageModel


def test_build_model_and_the_named_builder_give_the_same_model():
    from cs336_basics.models.factory import transformer_lm

    sizes = dict(vocab_size=50, context_length=16, d_model=16, num_layers=2, num_heads=2, d_ff=32)
    torch.manual_seed(0)
    built = build_model("transformer", **sizes)
    torch.manual_seed(0)
    direct = transformer_lm(**sizes)
    assert isinstance(built, LanguageModel) and built.plan == "AA"
    for (name, a), (_, b) in zip(built.state_dict().items(), direct.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("architecture", "kwargs"),
    [
        ("transformer", dict(context_length=16, num_layers=1, num_heads=2)),
        ("mamba", dict(num_layers=1, d_state=4)),
        ("hybrid", dict(context_length=16, num_heads=2, d_ff=32, d_state=4, pattern="AM")),
    ],
)
def test_each_architecture_maps_tokens_to_logits(architecture, kwargs):
    model = build_model(architecture, vocab_size=30, d_model=16, **kwargs)
    assert isinstance(model, LanguageModel)
    logits = model(torch.randint(0, 30, (2, 8)))
    assert logits.shape == (2, 8, 30)


def test_transformer_moe_option_puts_experts_in_every_layer():
    from cs336_basics.models.moe import MoEFeedForward

    model = build_model(
        "transformer", vocab_size=30, context_length=16, d_model=16, num_layers=2, num_heads=2,
        moe={"num_experts": 4, "top_k": 1},
    )  # fmt: skip
    assert all(isinstance(layer.ffn, MoEFeedForward) for layer in model.layers)
    model(torch.randint(0, 30, (2, 8)))
    assert model.auxiliary_loss().item() > 0


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match=r"unknown architecture 'rnn'; choose one of \['hybrid', 'hymba'"):
        build_model("rnn", vocab_size=10)


def test_unknown_argument_names_the_argument_and_the_accepted_ones():
    with pytest.raises(ValueError, match=r"transformer does not take argument\(s\) \['d_state'\]; accepted: "):
        build_model("transformer", vocab_size=10, context_length=8, d_model=8, num_layers=1, num_heads=2, d_state=4)
