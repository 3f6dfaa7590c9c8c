"""Specification of training/evaluation windows: coverage, overlap, shapes and exact resumption."""

import numpy as np
import pytest
import torch

from cs336_basics.data.windows import (
    TokenWindows,
    eval_window_starts,
    iter_eval_batches,
    sequential_window_starts,
)
from cs336_basics.training.batches import TokenBatches

TOKENS = np.arange(1000, dtype=np.uint16)


@pytest.mark.parametrize("n,ctx,stride", [(1000, 64, 51), (1000, 64, 64), (97, 10, 3), (200, 16, 17)])
def test_sequential_windows_cover_every_token(n, ctx, stride):
    starts = sequential_window_starts(n, ctx, stride)
    covered = np.zeros(n, dtype=bool)
    for s in starts:
        covered[s : s + ctx + 1] = True
    assert covered.all()
    assert starts[-1] == n - ctx - 1 and starts.min() == 0


def test_sequential_windows_advance_by_the_stride():
    starts = sequential_window_starts(1000, 64, 51)  # 0.8 x context
    assert (np.diff(starts)[:-1] == 51).all() and 0 < np.diff(starts)[-1] <= 51


def test_eval_windows_do_not_overlap_and_predict_each_token_at_most_once():
    starts = eval_window_starts(1000, 64)
    assert len(starts) == (1000 - 1) // 64
    predicted = np.concatenate([np.arange(s + 1, s + 65) for s in starts])
    assert len(np.unique(predicted)) == len(predicted)
    assert (np.diff(starts) == 64).all()


def test_eval_windows_are_pinned():
    """The exact validation windows every evaluation (trainer, fixed periodic eval, studies) scores."""
    assert eval_window_starts(100, 10).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80]  # 90 + 10 + 1 > 100
    assert eval_window_starts(101, 10).tolist() == [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]
    assert eval_window_starts(100, 10, max_tokens=39).tolist() == [0, 10, 20]
    assert eval_window_starts(100, 10, max_tokens=3).tolist() == [0]  # a cap below one window still scores one
    assert eval_window_starts(100, 10, max_tokens=10**9).tolist() == eval_window_starts(100, 10).tolist()
    batches = list(iter_eval_batches(np.arange(100, 150), 7, batch_size=3, max_tokens=30, device="cpu"))
    assert [x[:, 0].tolist() for x, _ in batches] == [[100, 107, 114], [121]]
    x, y = batches[1]
    assert x.tolist() == [list(range(121, 128))] and y.tolist() == [list(range(122, 129))]


def test_trainer_validation_windows_are_the_eval_windows():
    val = np.arange(1000, 1203, dtype=np.uint16)
    batches = TokenBatches(np.arange(50), val, context_length=16, device="cpu")
    got = list(batches.val_windows(batch_size=4, max_tokens=100))  # 100 // 16 = 6 windows
    inputs = torch.cat([x for x, _, _ in got])
    targets = torch.cat([y for _, y, _ in got])
    expected = np.stack([val[s : s + 17].astype(np.int64) for s in range(0, 96, 16)])  # sliced independently
    assert [len(x) for x, _, _ in got] == [4, 2] and all(mask is None for _, _, mask in got)
    assert inputs.tolist() == expected[:, :-1].tolist() and targets.tolist() == expected[:, 1:].tolist()
    assert sum(len(x) for x, _, _ in batches.val_windows(batch_size=5, max_tokens=None)) == 202 // 16


def test_eval_batches_are_deterministic_and_shifted():
    a = list(iter_eval_batches(TOKENS, 32, batch_size=5, max_tokens=12 * 32 + 31))
    b = list(iter_eval_batches(TOKENS, 32, batch_size=5, max_tokens=12 * 32 + 31))
    assert [x.shape[0] for x, _ in a] == [5, 5, 2]
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa[:, 1:], ya[:, :-1]) and xa.dtype == torch.int64


def test_random_windows_use_every_valid_start_and_stay_in_range():
    windows = TokenWindows(np.arange(20, dtype=np.int64), context_length=5, batch_size=64, seed=0)
    firsts = torch.cat([windows.next_batch()[0][:, 0] for _ in range(20)])
    assert set(firsts.tolist()) == set(range(15))
    x, y = windows.next_batch()
    assert x.shape == y.shape == (64, 5) and torch.equal(x + 1, y)


def test_sequential_epoch_visits_the_starts_in_order_then_wraps():
    windows = TokenWindows(TOKENS, 64, batch_size=4, mode="sequential", stride=51)
    starts = sequential_window_starts(1000, 64, 51)
    seen = np.concatenate([windows.next_starts() for _ in range(len(starts))])
    assert np.array_equal(seen[: len(starts)], starts)
    assert windows.epoch >= 1


def test_shuffled_epochs_are_permutations_of_the_starts():
    windows = TokenWindows(TOKENS, 64, batch_size=len(sequential_window_starts(1000, 64, 32)), mode="sequential",
                           stride=32, shuffle=True, seed=3)  # fmt: skip
    first, second = windows.next_starts(), windows.next_starts()
    assert sorted(first) == sorted(second) == sorted(sequential_window_starts(1000, 64, 32))
    assert not np.array_equal(first, second)


@pytest.mark.parametrize("kwargs", [{"mode": "random"}, {"mode": "sequential", "stride": 20, "shuffle": True}])
def test_resumed_sampler_continues_the_exact_sequence(kwargs):
    a = TokenWindows(TOKENS, 32, batch_size=7, seed=11, **kwargs)
    for _ in range(9):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch()[0] for _ in range(6)]
    b = TokenWindows(TOKENS, 32, batch_size=7, seed=11, **kwargs)
    b.load_state_dict(state)
    assert all(torch.equal(e, b.next_batch()[0]) for e in expected)


def test_state_from_different_settings_is_rejected():
    state = TokenWindows(TOKENS, 32, batch_size=4).state_dict()
    with pytest.raises(ValueError, match="context_length"):
        TokenWindows(TOKENS, 16, batch_size=4).load_state_dict(state)


def test_too_short_data_is_rejected_with_a_clear_message():
    with pytest.raises(ValueError, match="too few"):
        TokenWindows(np.arange(10), context_length=10, batch_size=1)
