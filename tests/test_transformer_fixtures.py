"""Snapshot tests: every nn/Transformer adapter reproduces the reference outputs in tests/fixtures/transformer/.

The fixtures (a tiny fixed-seed model in the ADAPTERS.md key layout plus fixed inputs and outputs) are written by
``uv run python -m tests.make_fixtures``; see that script for when to regenerate them.
"""

import numpy as np
import pytest
import torch

from tests.make_fixtures import CONFIG, FIXTURE_DIR, adapter_outputs

ATOL, RTOL = 1e-5, 1e-4  # float32 on CPU; loose enough for BLAS/thread-count differences, far below any bug


@pytest.fixture(scope="module")
def fixtures() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """(stored weights, outputs recomputed now, stored reference outputs)."""
    weights = torch.load(FIXTURE_DIR / "weights.pt", weights_only=True)
    stored = dict(np.load(FIXTURE_DIR / "outputs.npz"))
    inputs = {k.removeprefix("input_"): torch.from_numpy(a) for k, a in stored.items() if k.startswith("input_")}
    with torch.no_grad():
        return weights, adapter_outputs(weights, inputs), stored


def test_fixture_weights_use_the_adapter_key_layout(fixtures):
    weights, _, _ = fixtures
    layer_keys = {k.removeprefix("layers.1.") for k in weights if k.startswith("layers.1.")}
    assert layer_keys == {
        "attn.q_proj.weight",
        "attn.k_proj.weight",
        "attn.v_proj.weight",
        "attn.output_proj.weight",
        "ln1.weight",
        "ln2.weight",
        "ffn.w1.weight",
        "ffn.w2.weight",
        "ffn.w3.weight",
    }
    assert {"token_embeddings.weight", "ln_final.weight", "lm_head.weight"} <= set(weights)
    assert len(weights) == 3 + 9 * CONFIG["num_layers"]


def test_fixtures_are_tiny():
    assert sum(p.stat().st_size for p in FIXTURE_DIR.iterdir()) < 200_000


@pytest.mark.parametrize(
    "name",
    [
        "linear",
        "embedding",
        "swiglu",
        "sdpa",
        "mha",
        "mha_rope",
        "rope",
        "rmsnorm",
        "silu",
        "softmax",
        "cross_entropy",
        "transformer_block",
        "transformer_lm",
    ],
)
def test_adapter_reproduces_reference_output(fixtures, name):
    _, outputs, stored = fixtures
    np.testing.assert_allclose(outputs[name].numpy(), stored[name], rtol=RTOL, atol=ATOL)
