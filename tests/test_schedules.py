"""Learning-rate schedules against hand-computed values (cosine with warmup, warmup-stable-decay)."""

import math

import pytest
import torch

from cs336_basics.optim.schedules import (
    apply_learning_rate,
    constant_with_warmup,
    cosine_with_warmup,
    warmup_stable_decay,
)
from tests.adapters import run_get_lr_cosine_schedule

# max=1, min=0, warmup=4, cosine reaches the minimum at 8: warmup 0, .25, .5, .75; then cos from 1 to 0.
COSINE_BY_HAND = {0: 0.0, 1: 0.25, 2: 0.5, 3: 0.75, 4: 1.0, 6: 0.5, 8: 0.0, 9: 0.0, 100: 0.0}


@pytest.mark.parametrize(("it", "expected"), sorted(COSINE_BY_HAND.items()))
def test_cosine_with_warmup_matches_hand_computed_values(it, expected):
    assert cosine_with_warmup(it, 1.0, 0.0, 4, 8) == pytest.approx(expected, abs=1e-12)


def test_cosine_quarter_points_follow_the_half_cosine():
    # it=5 is a quarter of the way through the cosine: (1 + cos(pi/4)) / 2 of the range above the minimum.
    assert cosine_with_warmup(5, 2.0, 0.5, 4, 8) == pytest.approx(0.5 + 0.75 * (1 + math.sqrt(0.5)))
    assert cosine_with_warmup(7, 2.0, 0.5, 4, 8) == pytest.approx(0.5 + 0.75 * (1 - math.sqrt(0.5)))


def test_cosine_without_warmup_starts_at_the_maximum():
    assert cosine_with_warmup(0, 1e-3, 1e-4, 0, 10) == pytest.approx(1e-3)


def test_cosine_is_the_minimum_from_the_cycle_end_on_even_when_warmup_equals_the_cycle():
    assert cosine_with_warmup(5, 1.0, 0.1, 5, 5) == 0.1
    assert cosine_with_warmup(4, 1.0, 0.1, 5, 5) == pytest.approx(0.8)


def test_adapter_cosine_schedule_matches_the_cs336_reference_curve():
    max_lr, min_lr, warmup, cycle = 1.0, 0.1, 7, 21
    for it in range(25):
        if it < warmup:
            expected = it / warmup * max_lr
        elif it <= cycle:
            expected = min_lr + 0.5 * (1 + math.cos((it - warmup) / (cycle - warmup) * math.pi)) * (max_lr - min_lr)
        else:
            expected = min_lr
        got = run_get_lr_cosine_schedule(
            it=it, max_learning_rate=max_lr, min_learning_rate=min_lr, warmup_iters=warmup, cosine_cycle_iters=cycle
        )
        assert got == pytest.approx(expected, abs=1e-12), f"it={it}"


# warmup=2, stable=3, decay=4 (decay phase covers it=5..8), max=1, min=0.2.
WSD_LINEAR_BY_HAND = {0: 0.0, 1: 0.5, 2: 1.0, 4: 1.0, 5: 1.0, 6: 0.8, 7: 0.6, 8: 0.4, 9: 0.2, 50: 0.2}
WSD_COSINE_BY_HAND = {
    1: 0.5,
    3: 1.0,
    5: 1.0,
    6: 0.2 + 0.4 * (1 + math.sqrt(0.5)),
    7: 0.6,
    8: 0.2 + 0.4 * (1 - math.sqrt(0.5)),
    9: 0.2,
}


@pytest.mark.parametrize(("it", "expected"), sorted(WSD_LINEAR_BY_HAND.items()))
def test_wsd_linear_matches_hand_computed_values(it, expected):
    assert warmup_stable_decay(it, 1.0, 0.2, 2, 3, 4, "linear") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("it", "expected"), sorted(WSD_COSINE_BY_HAND.items()))
def test_wsd_cosine_matches_hand_computed_values(it, expected):
    assert warmup_stable_decay(it, 1.0, 0.2, 2, 3, 4, "cosine") == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("shape", ["linear", "cosine"])
def test_wsd_decay_phase_strictly_lowers_the_rate_to_the_minimum(shape):
    warmup, stable, decay = 10, 20, 30
    rates = [warmup_stable_decay(it, 3e-3, 3e-4, warmup, stable, decay, shape) for it in range(warmup + stable + decay)]
    decay_rates = rates[warmup + stable :]
    assert decay_rates[0] == 3e-3
    assert all(later < earlier for earlier, later in zip(decay_rates, decay_rates[1:], strict=False))
    assert warmup_stable_decay(warmup + stable + decay, 3e-3, 3e-4, warmup, stable, decay, shape) == 3e-4


def test_wsd_holds_the_maximum_throughout_the_stable_phase():
    assert {warmup_stable_decay(it, 1e-3, 0.0, 5, 10, 5) for it in range(5, 15)} == {1e-3}


@pytest.mark.parametrize(
    "call",
    [
        lambda: cosine_with_warmup(-1, 1.0, 0.1, 2, 10),
        lambda: cosine_with_warmup(0, 1.0, 0.1, 10, 5),
        lambda: cosine_with_warmup(0, 0.1, 1.0, 2, 10),
        lambda: warmup_stable_decay(0, 1.0, 0.1, 2, -1, 3),
        lambda: warmup_stable_decay(0, 1.0, 0.1, 2, 1, 3, "exponential"),
    ],
    ids=["negative-it", "cycle-before-warmup-end", "min-above-max", "negative-stable", "unknown-shape"],
)
def test_schedules_reject_invalid_arguments(call):
    with pytest.raises(ValueError):
        call()


def test_constant_schedule_shares_the_warmup_of_cosine_and_wsd_then_holds_the_maximum():
    for it in range(10):
        expected = it / 10 * 3e-3  # 0 at step 0, like the other two
        assert constant_with_warmup(it, 3e-3, 10) == pytest.approx(expected)
        assert cosine_with_warmup(it, 3e-3, 3e-4, 10, 100) == pytest.approx(expected)
        assert warmup_stable_decay(it, 3e-3, 3e-4, 10, 50, 40) == pytest.approx(expected)
    assert [constant_with_warmup(it, 3e-3, 10) for it in (10, 500, 10**6)] == [3e-3] * 3
    assert constant_with_warmup(0, 3e-3, 0) == 3e-3


def test_apply_learning_rate_sets_every_group_scaled_by_its_lr_scale():
    a, b = torch.nn.Parameter(torch.ones(1)), torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 0.1}], lr=1.0)
    apply_learning_rate(optimizer, 0.5)
    assert [group["lr"] for group in optimizer.param_groups] == [0.5, pytest.approx(0.05)]
