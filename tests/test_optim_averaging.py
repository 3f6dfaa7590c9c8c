"""Checkpoint weight averaging: float entries are the uniform mean, everything else comes from the last state dict."""

import pytest
import torch
from torch import nn

from cs336_basics.optim.averaging import average_state_dicts


def test_float_tensors_are_the_elementwise_mean():
    sds = [{"w": torch.tensor([1.0, 2.0]) * k} for k in (1, 2, 6)]
    torch.testing.assert_close(average_state_dicts(sds)["w"], torch.tensor([3.0, 6.0]))


def test_averaging_matches_the_mean_of_real_model_state_dicts():
    models = [nn.Linear(4, 3) for _ in range(4)]
    averaged = average_state_dicts([m.state_dict() for m in models])
    for key in ("weight", "bias"):
        expected = torch.stack([m.state_dict()[key] for m in models]).mean(dim=0)
        torch.testing.assert_close(averaged[key], expected)


def test_non_float_entries_come_from_the_last_state_dict():
    sds = [{"count": torch.tensor(k), "flag": torch.tensor(k % 2 == 0), "w": torch.zeros(1)} for k in (1, 2, 3)]
    averaged = average_state_dicts(sds)
    assert averaged["count"].item() == 3 and averaged["count"].dtype == torch.int64
    assert averaged["flag"].item() is False


def test_the_average_keeps_the_dtype_of_each_entry():
    sds = [{"w": torch.full((3,), value, dtype=torch.bfloat16)} for value in (1.0, 2.0)]
    averaged = average_state_dicts(sds)["w"]
    assert averaged.dtype == torch.bfloat16
    assert torch.equal(averaged, torch.full((3,), 1.5, dtype=torch.bfloat16))


def test_a_single_state_dict_averages_to_itself():
    sd = nn.Linear(3, 2).state_dict()
    for key, value in average_state_dicts([sd]).items():
        assert torch.equal(value, sd[key])


def test_averaging_rejects_an_empty_list():
    with pytest.raises(ValueError, match="at least one"):
        average_state_dicts([])


def test_averaging_rejects_mismatched_keys():
    with pytest.raises(ValueError, match="different keys"):
        average_state_dicts([{"a": torch.zeros(1)}, {"b": torch.zeros(1)}])


def test_averaging_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="'a'"):
        average_state_dicts([{"a": torch.zeros(2)}, {"a": torch.zeros(3)}])
