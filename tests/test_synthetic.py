"""Specification of the synthetic recall/memory tasks: layout, recoverable answers, determinism and the metric."""

import math

import pytest
import torch

from cs336_basics.data.synthetic import AssociativeRecall, accuracy, make_task

TASK_CONFIGS = [
    ("mqar", {"vocab_size": 64, "num_pairs": 6, "seq_len": 30}),
    ("mqar", {"vocab_size": 64, "num_pairs": 4, "num_queries": 7, "seq_len": 40}),
    ("mqar", {"vocab_size": 64, "num_pairs": 5, "num_queries": 4, "seq_len": 60, "query_placement": "random"}),
    (
        "mqar",
        {"vocab_size": 64, "num_pairs": 4, "seq_len": 64, "query_placement": "power_law", "reveal_answers": False},
    ),
    ("copy", {"vocab_size": 10, "copy_len": 9, "seq_len": 24}),
    ("selective_copy", {"vocab_size": 12, "num_tokens": 5, "region_len": 20, "seq_len": 26}),
]


def oracle_answer(name: str, inputs: list[int], t: int) -> int:
    """Predict the token after ``inputs[: t + 1]`` by reading the context with plain loops (no task internals)."""
    if name == "mqar":
        key = inputs[t]
        for i in range(0, t - 1, 2):  # key-value pairs sit at even/odd positions before the queries
            if inputs[i] == key:
                return inputs[i + 1]
        raise AssertionError("queried key never bound")
    sep = 1 if name == "copy" else 2
    start = inputs.index(sep)
    data = inputs[:start] if name == "copy" else [x for x in inputs[:start] if x != 1]
    return data[t - start]


def oracle_logits(name: str, inputs: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor:
    logits = torch.zeros(*inputs.shape, vocab)
    for b in range(inputs.shape[0]):
        row = inputs[b].tolist()
        for t in torch.nonzero(mask[b]).flatten().tolist():
            logits[b, t, oracle_answer(name, row, t)] = 1.0
    return logits


@pytest.mark.parametrize("name,kwargs", TASK_CONFIGS)
def test_batch_shapes_and_dtypes(name, kwargs):
    task = make_task(name, **kwargs)
    x, y, m = task.sample_batch(5, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == m.shape == (5, kwargs["seq_len"])
    assert x.dtype == y.dtype == torch.int64 and m.dtype == torch.bool
    assert int(x.max()) < task.vocab_size and int(y.max()) < task.vocab_size and int(x.min()) >= 0


@pytest.mark.parametrize("name,kwargs", TASK_CONFIGS)
def test_targets_are_inputs_shifted_by_one(name, kwargs):
    x, y, m = make_task(name, **kwargs).sample_batch(4, torch.Generator().manual_seed(1))
    if kwargs.get("reveal_answers", True):
        assert torch.equal(x[:, 1:], y[:, :-1])
    else:  # the answers are targets only: padding sits where the input would repeat them
        hidden = m[:, :-1]
        assert torch.equal(x[:, 1:][~hidden], y[:, :-1][~hidden]) and (x[:, 1:][hidden] == 0).all()


@pytest.mark.parametrize("name,kwargs", TASK_CONFIGS)
def test_answers_are_recoverable_from_the_context(name, kwargs):
    task = make_task(name, **kwargs)
    x, y, m = task.sample_batch(16, torch.Generator().manual_seed(2))
    assert m.any(dim=1).all()
    assert accuracy(oracle_logits(name, x, m, task.vocab_size), y, m) == 1.0


@pytest.mark.parametrize("name,kwargs", TASK_CONFIGS)
def test_random_predictor_scores_about_chance(name, kwargs):
    task = make_task(name, **kwargs)
    x, y, m = task.sample_batch(512, torch.Generator().manual_seed(3))
    logits = torch.randn(*x.shape, task.vocab_size, generator=torch.Generator().manual_seed(4))
    chance, answers = 1 / task.vocab_size, int(m.sum())
    five_sigma = 5 * math.sqrt(chance * (1 - chance) / answers)  # binomial spread of the scored answers
    assert five_sigma < chance  # so an accuracy of 0 (or of twice chance) fails
    assert task.accuracy(logits, y, m) == pytest.approx(chance, abs=five_sigma)


@pytest.mark.parametrize("name,kwargs", TASK_CONFIGS)
def test_same_generator_state_gives_the_same_batch(name, kwargs):
    task = make_task(name, **kwargs)
    a = task.sample_batch(8, torch.Generator().manual_seed(5))
    b = task.sample_batch(8, torch.Generator().manual_seed(5))
    c = task.sample_batch(8, torch.Generator().manual_seed(6))
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])


def test_validation_set_is_fixed_by_its_seed():
    task = make_task("mqar")
    assert all(torch.equal(p, q) for p, q in zip(task.validation_set(32), task.validation_set(32), strict=True))
    assert not torch.equal(task.validation_set(32, seed=1)[0], task.validation_set(32, seed=2)[0])


def test_mqar_keys_are_distinct_within_a_sequence():
    task = make_task("mqar", vocab_size=40, num_pairs=16, seq_len=63)
    x, _, _ = task.sample_batch(64, torch.Generator().manual_seed(7))
    keys = x[:, 0:32:2]
    assert all(len(set(row.tolist())) == 16 for row in keys)


def test_selective_copy_scatters_data_among_noise():
    task = make_task("selective_copy", vocab_size=12, num_tokens=5, region_len=20, seq_len=26)
    x, _, _ = task.sample_batch(64, torch.Generator().manual_seed(8))
    region = x[:, :20]
    assert ((region != 1).sum(dim=1) == 5).all()
    first_data = (region != 1).float().argmax(dim=1)
    assert first_data.float().mean() > 0.5  # data does not always start the sequence


def test_accuracy_counts_only_answer_positions():
    targets = torch.tensor([[1, 2, 3]])
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 2, 3]]), 4).float()
    assert accuracy(logits, targets, torch.tensor([[False, True, True]])) == 1.0
    assert accuracy(logits, targets, torch.tensor([[True, True, True]])) == pytest.approx(2 / 3)


def test_unknown_task_and_option_are_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="unknown synthetic task"):
        make_task("sorting")
    with pytest.raises(ValueError, match="num_keys"):
        make_task("mqar", num_keys=3)
    with pytest.raises(ValueError, match="seq_len must be"):
        make_task("copy", copy_len=20, seq_len=10)


def test_random_query_placement_spreads_queries_over_the_sequence():
    task = make_task("mqar", vocab_size=64, num_pairs=4, seq_len=63, query_placement="random")
    _, _, mask = task.sample_batch(256, torch.Generator().manual_seed(9))
    positions = torch.nonzero(mask)[:, 1]
    assert int(positions.min()) < 16 and int(positions.max()) > 50
    assert (positions % 2 == 0).all()  # targets index values, which sit at odd input positions


def test_contiguous_queries_follow_the_pairs_immediately():
    task = make_task("mqar", vocab_size=64, num_pairs=4, seq_len=63)
    _, _, mask = task.sample_batch(8, torch.Generator().manual_seed(9))
    assert torch.equal(torch.nonzero(mask[0]).flatten(), torch.tensor([8, 10, 12, 14]))


@pytest.mark.parametrize(("pairs", "seq_len", "expected"), [(8, 64, 0.1330), (32, 256, 0.0397)])
def test_mqar_value_guess_floor_is_exact_and_matches_guessing_on_sampled_sequences(pairs, seq_len, expected):
    """Oracle: on 4,000 sampled sequences, the mean of 1 / (distinct values among the pairs)."""
    task = AssociativeRecall(vocab_size=128, num_pairs=pairs, seq_len=seq_len)
    floor = task.value_guess_floor()
    assert floor == pytest.approx(expected, abs=5e-4)
    inputs, _, _ = task.validation_set(4000, seed=3)
    values = inputs[:, 1 : 2 * pairs : 2]  # (N, P): the bound values
    distinct = torch.tensor([len(set(row.tolist())) for row in values], dtype=torch.float64)
    assert (1 / distinct).mean().item() == pytest.approx(floor, rel=0.02)
    assert floor > 1 / pairs  # repeated values make guessing a little easier than 1/P


def elimination_scores(inputs: torch.Tensor, mask: torch.Tensor, pairs: int) -> float:
    """Expected accuracy of guessing, at each query, uniformly among the bound values that no earlier position after
    the pairs has shown (plain loops; no task internals). Needs no key matching at all."""
    scores = []
    for b in range(inputs.shape[0]):
        row = inputs[b].tolist()
        bound = {row[i]: row[i + 1] for i in range(0, 2 * pairs, 2)}
        for t in torch.nonzero(mask[b]).flatten().tolist():
            seen = set(row[2 * pairs : t + 1])
            candidates = {v for v in bound.values() if v not in seen}
            scores.append(1 / len(candidates) if bound[row[t]] in candidates else 0.0)
    return sum(scores) / len(scores)


@pytest.mark.parametrize("placement", ["contiguous", "random", "power_law"])
def test_revealed_answers_let_later_queries_be_answered_by_elimination_and_hidden_ones_do_not(placement):
    """With the answers in the input, a predictor that never matches keys scores the elimination floor (0.521 at
    4 pairs), twice the value-guess floor; with them hidden, the same predictor falls to the value-guess floor."""
    options = {"vocab_size": 8192, "num_pairs": 4, "seq_len": 64, "query_placement": placement}
    leaky, faithful = (AssociativeRecall(**options, reveal_answers=reveal) for reveal in (True, False))
    assert leaky.elimination_floor() == pytest.approx((1 / 4 + 1 / 3 + 1 / 2 + 1) / 4, abs=1e-3)
    assert faithful.elimination_floor() is None
    for task, expected in ((leaky, leaky.elimination_floor()), (faithful, faithful.value_guess_floor())):
        inputs, _, mask = task.validation_set(1500, seed=11)
        assert elimination_scores(inputs, mask, 4) == pytest.approx(expected, abs=0.02)


def test_hidden_answers_appear_in_the_input_only_where_they_are_bound():
    task = AssociativeRecall(vocab_size=8192, num_pairs=4, seq_len=64, query_placement="random", reveal_answers=False)
    inputs, targets, mask = task.validation_set(64, seed=2)
    for b in range(64):
        row = inputs[b].tolist()
        for value in targets[b][mask[b]].tolist():
            assert value in row[:8] and value not in row[8:]  # values may repeat among the pairs


def test_power_law_placement_draws_slots_with_zoologys_weights():
    """Pair 0's query is the first draw: slot s (1 = right after the pairs) with probability s^(a-1) / sum."""
    a, slots = 0.01, (64 + 1 - 8) // 2
    task = AssociativeRecall(vocab_size=64, num_pairs=4, seq_len=64, query_placement="power_law", power_a=a)
    inputs, _, mask = task.validation_set(6000, seed=4)
    first_key = inputs[:, 0]
    found = (inputs[:, 8:] == first_key[:, None]).float().argmax(dim=1)  # offset of pair 0's query after the pairs
    weights = torch.arange(1, slots + 1, dtype=torch.float64) ** (a - 1)
    expected = weights / weights.sum()
    observed = torch.bincount(found // 2 + 1, minlength=slots + 1)[1:].double() / len(found)
    assert (found % 2 == 0).all()
    assert torch.allclose(observed, expected, atol=0.015)
    assert expected[0] > 5 * expected[-1]  # near slots dominate at a = 0.01
    with pytest.raises(ValueError, match="power_a"):
        AssociativeRecall(num_pairs=4, seq_len=64, query_placement="power_law", power_a=0.0)


def test_bad_mqar_placement_and_reveal_answers_are_named_in_one_line():
    with pytest.raises(
        ValueError, match="query_placement must be 'contiguous', 'random' or 'power_law', got 'powerlaw'"
    ):
        make_task("mqar", query_placement="powerlaw")
    with pytest.raises(ValueError, match="reveal_answers must be true or false, got 'no'"):
        make_task("mqar", reveal_answers="no")
    with pytest.raises(ValueError, match="num_queries must be <= num_pairs"):
        make_task("mqar", num_pairs=4, num_queries=6, seq_len=64, query_placement="power_law")
