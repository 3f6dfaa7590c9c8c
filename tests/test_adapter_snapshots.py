"""Snapshot tests: the optimizer, data, schedule, scan and Mamba/hybrid LM adapters reproduce tests/fixtures/adapters/.

The fixtures (fixed-seed inputs, tiny tensor-only ``mamba_lm.pt`` / ``hybrid_lm.pt`` weights and the adapters'
outputs) are written by ``uv run python -m tests.make_fixtures``; see that script for when to regenerate them.
Each output is recomputed from the stored inputs and weights and compared with the tolerance stated next to it.
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from cs336_basics.models.factory import hybrid_lm, mamba_lm
from tests.make_fixtures import (
    ADAPTER_DIR,
    HYBRID_CONFIG,
    MAMBA_CONFIG,
    adapter_snapshot_outputs,
    write_adapter_fixtures,
    write_transformer_fixtures,
)

# (rtol, atol) per output; None means exact equality (integer token ids).
TOLERANCES: dict[str, tuple[float, float] | None] = {
    "get_batch_inputs": None,
    "get_batch_targets": None,
    "get_batch_single_inputs": None,
    "get_batch_single_targets": None,
    # float32, 10 steps: only the summation order of the tiny loss/grad can vary (~1e-7 relative); a wrong update
    # order, bias correction or decay moves the parameters by a sizeable fraction of lr = 0.05.
    "adamw_trajectory": (1e-5, 1e-6),
    # One float32 scale per tensor; only the global-norm summation order can vary (a few ulps).
    "clip_clipped_g0": (1e-6, 0.0),
    "clip_clipped_g1": (1e-6, 0.0),
    "clip_unclipped_g0": (0.0, 0.0),  # below the limit the gradients must be left bit-for-bit untouched
    "clip_unclipped_g1": (0.0, 0.0),
    # float64 scalar arithmetic: at most last-ulp libm differences in cos.
    "cosine_lr": (1e-12, 1e-15),
    # float32 exp and running sums over 20 steps, |y| up to ~9: thread/reduction-order noise is ~1e-6.
    "scan_reference_plain": (1e-4, 1e-5),
    "scan_reference_full": (1e-4, 1e-5),
    "scan_chunked_plain": (1e-4, 1e-5),
    "scan_chunked_full": (1e-4, 1e-5),
    # float32 logits of 2-layer tiny LMs on CPU: loose enough for BLAS/thread-count differences, far below any bug.
    "mamba_lm": (1e-4, 1e-5),
    "hybrid_lm": (1e-4, 1e-5),
}


@pytest.fixture(scope="module")
def snapshots() -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """(outputs recomputed now from the stored inputs and weights, stored reference outputs)."""
    mamba_weights = torch.load(ADAPTER_DIR / "mamba_lm.pt", weights_only=True)
    hybrid_weights = torch.load(ADAPTER_DIR / "hybrid_lm.pt", weights_only=True)
    stored = dict(np.load(ADAPTER_DIR / "outputs.npz"))
    inputs = {k.removeprefix("input_"): torch.from_numpy(a) for k, a in stored.items() if k.startswith("input_")}
    return adapter_snapshot_outputs(inputs, mamba_weights, hybrid_weights), stored


def test_every_snapshot_has_a_stated_tolerance(snapshots):
    outputs, stored = snapshots
    assert set(outputs) == set(TOLERANCES)
    assert {k for k in stored if not k.startswith("input_")} == set(TOLERANCES)


@pytest.mark.parametrize("name", list(TOLERANCES))
def test_adapter_reproduces_snapshot(snapshots, name):
    outputs, stored = snapshots
    current, reference = outputs[name].detach().numpy(), stored[name]
    assert current.shape == reference.shape and current.dtype == reference.dtype
    tolerance = TOLERANCES[name]
    if tolerance is None:
        np.testing.assert_array_equal(current, reference)
    else:
        np.testing.assert_allclose(current, reference, rtol=tolerance[0], atol=tolerance[1])


@pytest.mark.parametrize(
    ("filename", "model_cls", "config"),
    [
        ("mamba_lm.pt", mamba_lm, MAMBA_CONFIG),
        ("hybrid_lm.pt", hybrid_lm, HYBRID_CONFIG),
    ],
)
def test_lm_weights_are_tensor_only_in_the_model_key_layout(filename, model_cls, config):
    weights = torch.load(ADAPTER_DIR / filename, weights_only=True)
    expected = {k: tuple(t.shape) for k, t in model_cls(**config).state_dict().items()}
    assert {k: tuple(t.shape) for k, t in weights.items()} == expected
    assert all(isinstance(t, torch.Tensor) for t in weights.values())


def test_adapter_fixtures_stay_small():
    assert sum(p.stat().st_size for p in ADAPTER_DIR.iterdir()) < 150_000


def test_regenerating_the_fixtures_is_byte_identical(tmp_path: Path):
    for run in ("first", "second"):
        write_adapter_fixtures(tmp_path / run / "adapters")
        write_transformer_fixtures(tmp_path / run / "transformer")
    files = sorted(p.relative_to(tmp_path / "first") for p in (tmp_path / "first").rglob("*") if p.is_file())
    assert len(files) == 5
    for relative in files:
        assert (tmp_path / "first" / relative).read_bytes() == (tmp_path / "second" / relative).read_bytes(), relative
