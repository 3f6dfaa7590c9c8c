"""Specification of cs336_basics.training.generation: KV-cache decoding, batching, sampling rules.

Oracles: a recompute-the-whole-prefix greedy decoder written here, the same model without a cache, and the
closed-form behaviour of greedy / nucleus sampling.
"""

import pytest
import torch

from cs336_basics.models.factory import transformer_lm
from cs336_basics.training.generation import generate, sample_next_token

VOCAB, CONTEXT = 30, 24


class WithoutCache(torch.nn.Module):
    """The same model, hiding its make_cache so generate must recompute the prefix; counts forward calls."""

    def __init__(self, model: transformer_lm) -> None:
        super().__init__()
        self.model, self.context_length, self.calls = model, model.context_length, []

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls.append(ids.shape[1])
        return self.model(ids)


@pytest.fixture
def model() -> transformer_lm:
    torch.manual_seed(0)
    return transformer_lm(VOCAB, CONTEXT, 32, 2, 4).eval()


def greedy_by_recompute(model: transformer_lm, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        logits = model(torch.tensor([ids[-CONTEXT:]]))[0, -1]
        ids.append(int(logits.argmax()))
    return ids[len(prompt) :]


def test_greedy_kv_cache_decoding_matches_recomputing_the_prefix(model):
    assert generate(model, [3, 1, 4, 1, 5], 10, temperature=0) == greedy_by_recompute(model, [3, 1, 4, 1, 5], 10)


def test_batched_prompts_of_different_lengths_match_one_by_one_decoding(model):
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    batched = generate(model, prompts, 8, temperature=0)
    assert batched == [greedy_by_recompute(model, p, 8) for p in prompts]


def test_decoding_past_the_context_length_crops_the_prefix(model):
    prompt = list(range(20))
    assert generate(model, prompt, 10, temperature=0) == greedy_by_recompute(model, prompt, 10)


def test_models_without_a_cache_fall_back_to_recomputation(model):
    plain = WithoutCache(model)
    prompts = [[1, 2], [3, 4, 5]]
    assert generate(plain, prompts, 5, temperature=0) == generate(model, prompts, 5, temperature=0)
    assert plain.calls[0] == 2 and plain.calls[-1] == 7


def test_each_cached_step_feeds_one_position(model):
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    generate(model, [[1, 2, 3, 4]], 5, temperature=0)
    assert seen == [4, 1, 1, 1, 1]


def test_generation_stops_at_end_of_text_and_keeps_it(model):
    free = generate(model, [5, 6, 7], 10, temperature=0)
    eos = free[3]
    stopped = generate(model, [5, 6, 7], 10, temperature=0, eos_id=eos)
    assert stopped == free[: free.index(eos) + 1]


def test_sampling_is_deterministic_given_a_seed(model):
    first = generate(model, [[1, 2], [3]], 12, temperature=1.0, seed=7)
    assert first == generate(model, [[1, 2], [3]], 12, temperature=1.0, seed=7)
    assert first != generate(model, [[1, 2], [3]], 12, temperature=1.0, seed=8)


def test_a_flat_prompt_returns_a_flat_list(model):
    out = generate(model, torch.tensor([1, 2, 3]), 4, temperature=0)
    assert isinstance(out, list) and len(out) == 4 and all(isinstance(t, int) for t in out)


def test_generate_restores_training_mode(model):
    model.train()
    generate(model, [1], 2, temperature=0)
    assert model.training


def test_temperature_zero_is_argmax():
    logits = torch.randn(5, 9)
    assert torch.equal(sample_next_token(logits, temperature=0), logits.argmax(-1))


def test_tiny_top_p_keeps_only_the_most_likely_token():
    logits = torch.randn(6, 9)
    generator = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next_token(logits, 1.0, top_p=1e-6, generator=generator), logits.argmax(-1))


def test_top_p_samples_only_from_the_nucleus():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)
    generator = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_next_token(logits, 1.0, top_p=0.75, generator=generator), minlength=4)
    assert counts[2:].sum() == 0  # 0.5 + 0.3 >= 0.75 already
    assert counts[0] / counts[:2].sum() == pytest.approx(0.5 / 0.8, abs=0.04)


def test_sampling_follows_the_tempered_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(4000, 3)
    generator = torch.Generator().manual_seed(0)
    freq = torch.bincount(sample_next_token(logits, 2.0, generator=generator), minlength=3) / 4000
    expected = torch.softmax(logits[0] / 2.0, dim=-1)
    torch.testing.assert_close(freq, expected, atol=0.03, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"prompt_ids": [[]]}, "prompt"), ({"temperature": -1.0}, "temperature"), ({"top_p": 0.0}, "top_p")],
)
def test_generate_rejects_bad_arguments(model, kwargs, message):
    args = {"prompt_ids": [[1]], "max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        generate(model, **args)
