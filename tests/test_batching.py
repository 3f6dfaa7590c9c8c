"""get_batch: windows of consecutive tokens, targets shifted by one, start indices uniform over all valid starts."""

import numpy as np
import pytest
import torch

from cs336_basics.data.batching import get_batch
from tests.adapters import run_get_batch


def _starts(inputs: torch.Tensor) -> np.ndarray:
    # With dataset = arange(n), a window's first token is its start index.
    return inputs[:, 0].numpy()


def test_batch_shapes_dtypes_and_device():
    inputs, targets = get_batch(np.arange(50, dtype=np.uint16), 4, 8, "cpu")
    assert inputs.shape == targets.shape == (4, 8)
    assert inputs.dtype == targets.dtype == torch.int64
    assert inputs.device.type == targets.device.type == "cpu"


def test_inputs_are_consecutive_tokens_and_targets_are_shifted_by_one():
    dataset = np.arange(1000) * 7  # token at index i is 7i, so windows reveal their indices
    inputs, targets = get_batch(dataset, 16, 10, "cpu", generator=np.random.default_rng(0))
    starts = inputs[:, :1] // 7
    expected_inputs = (starts + torch.arange(10)) * 7
    torch.testing.assert_close(inputs, expected_inputs)
    torch.testing.assert_close(targets, expected_inputs + 7)


def test_start_indices_cover_every_valid_start_uniformly():
    n, context_length = 100, 7
    num_starts = n - context_length  # starts 0..92; start 92 uses the last token as its final target
    np.random.seed(0)
    counts = np.zeros(num_starts)
    for _ in range(300):
        inputs, targets = run_get_batch(np.arange(n), 32, context_length, "cpu")
        np.add.at(counts, _starts(inputs), 1)
        assert int(targets.max()) <= n - 1
    assert (counts > 0).all(), "some valid start index is never sampled"
    expected = counts.sum() / num_starts
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    dof = num_starts - 1
    # Chi-square with 92 degrees of freedom: mean 92, std ~13.6; six standard deviations is a very safe bound.
    assert chi_square < dof + 6 * np.sqrt(2 * dof), f"start counts far from uniform (chi^2={chi_square:.1f})"


def test_a_dataset_of_exactly_context_plus_one_tokens_has_a_single_start():
    inputs, targets = get_batch(np.arange(9), 5, 8, "cpu")
    assert (inputs == torch.arange(8)).all() and (targets == torch.arange(1, 9)).all()


def test_a_numpy_generator_makes_batches_reproducible():
    dataset = np.arange(500)
    first = get_batch(dataset, 8, 16, "cpu", generator=np.random.default_rng(123))
    second = get_batch(dataset, 8, 16, "cpu", generator=np.random.default_rng(123))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_a_torch_generator_makes_batches_reproducible():
    dataset = np.arange(500)
    first = get_batch(dataset, 8, 16, "cpu", generator=torch.Generator().manual_seed(5))
    second = get_batch(dataset, 8, 16, "cpu", generator=torch.Generator().manual_seed(5))
    assert torch.equal(first[0], second[0])


def test_batches_can_be_drawn_from_a_memmap(tmp_path):
    path = tmp_path / "tokens.bin"
    np.arange(300, dtype=np.uint16).tofile(path)
    dataset = np.memmap(path, dtype=np.uint16, mode="r")
    inputs, targets = get_batch(dataset, 4, 12, "cpu", generator=np.random.default_rng(1))
    assert inputs.dtype == torch.int64
    torch.testing.assert_close(targets, inputs + 1)


def test_returned_tensors_are_contiguous_so_they_can_be_flattened():
    inputs, targets = get_batch(np.arange(100), 3, 5, "cpu")
    assert inputs.is_contiguous() and targets.is_contiguous()
    assert targets.view(-1).shape == (15,)


@pytest.mark.parametrize("device", ["cuda:99", "not-a-device"])
def test_an_unavailable_or_invalid_device_raises_a_runtime_error_naming_it(device):
    with pytest.raises(RuntimeError, match="device"):
        run_get_batch(np.arange(100), 2, 4, device)


def test_a_dataset_too_short_for_the_context_raises():
    with pytest.raises(ValueError, match="too short"):
        get_batch(np.arange(8), 2, 8, "cpu")


@pytest.mark.parametrize(
    "dataset", [np.arange(20).reshape(4, 5), np.linspace(0, 1, 20), [1, 2, 3, 4, 5, 6]], ids=["2d", "float", "list"]
)
def test_a_dataset_that_is_not_a_1d_integer_array_raises(dataset):
    with pytest.raises(ValueError, match="dataset"):
        get_batch(dataset, 2, 3, "cpu")
