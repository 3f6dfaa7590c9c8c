"""Specification of the synthetic recall/memory tasks: layout, recoverable answers, determinism and the metric."""

import pytest
import torch

from cs336_basics.data.synthetic import AssociativeRecall, accuracy, make_task

TASK_CONFIGS = [
    ("mqar", {"vocab_size": 64, "num_pairs": 6, "seq_len": 30}),
    ("mqar", {"vocab_size": 64, "num_pairs": 4, "num_queries": 7, "seq_len": 40}),
    ("mqar", {"vocab_size": 64, "num_pairs": 5, "num_queries": 4, "seq_len": 60, "query_placement": "random"}),
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
    x, y, _ = make_task(name, **kwargs).sample_batch(4, torch.Generator().manual_seed(1))
    assert torch.equal(x[:, 1:], y[:, :-1])


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
    assert task.accuracy(logits, y, m) == pytest.approx(1 / task.vocab_size, abs=0.02)


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
