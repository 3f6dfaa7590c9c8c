"""Specification of the Triton selective-scan kernels, run on CPU through Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before the kernels are decorated, so it is set here before they are imported
(the dispatcher imports them lazily, only when the triton backend is chosen). The interpreter is slow: the default
run checks a few shapes that still cover every input's gradient, padded channel/state blocks, several channel
blocks, L = 1 and the chunk boundaries; the broad sweep is marked slow. Oracle: the sequential reference.
"""

from __future__ import annotations

import os

os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from kernels.selective_scan import selective_scan  # noqa: E402
from kernels.selective_scan.reference import selective_scan_reference  # noqa: E402
from kernels.selective_scan.triton_scan import selective_scan_triton  # noqa: E402
from tests.test_selective_scan import make_inputs, run_with_grads  # noqa: E402

CHUNK = 8  # small checkpoint spacing so short sequences cross several chunk boundaries


def assert_matches_reference(x, softplus=True, rtol=1e-4, atol=1e-4, **kwargs):
    """Triton vs reference (both from the same inputs) on y, last state and every input's gradient."""
    ref = run_with_grads(selective_scan_reference, x, softplus=softplus)
    got = run_with_grads(selective_scan_triton, x, softplus=softplus, **kwargs)
    assert got[0].dtype == x["u"].dtype
    torch.testing.assert_close(got[0].float(), ref[0].float(), rtol=rtol, atol=atol, msg="y")
    torch.testing.assert_close(got[1], ref[1].float(), rtol=rtol, atol=atol, msg="last state")
    for name, want in ref[2].items():
        scale = want.abs().max().float().clamp_min(1.0)
        torch.testing.assert_close(
            got[2][name].float() / scale, want.float() / scale, rtol=rtol, atol=atol, msg=f"grad {name}"
        )


def float32_inputs(**kwargs):
    return {k: v.detach().float().requires_grad_() if v is not None else None for k, v in make_inputs(**kwargs).items()}


def test_triton_matches_reference_on_every_input_gradient_across_channel_blocks():
    # d = 5 with 4-channel blocks: two programs per batch row, the second half padding; n = 3 pads to 4.
    assert_matches_reference(float32_inputs(b=2, d=5, n=3, L=19), chunk_size=CHUNK, block_d=4)


@pytest.mark.parametrize("L", [1, CHUNK, CHUNK + 1, 2 * CHUNK])
def test_triton_matches_reference_at_chunk_boundaries(L):
    assert_matches_reference(float32_inputs(b=1, d=2, n=4, L=L), chunk_size=CHUNK)


def test_triton_matches_reference_without_optional_inputs():
    assert_matches_reference(float32_inputs(b=1, d=3, n=2, L=11, optional=False), softplus=False, chunk_size=CHUNK)


def test_triton_bf16_inputs_give_bf16_output_close_to_reference():
    # Same bf16 inputs for both; the reference also accumulates in float32, so only bf16 output/grad rounding
    # (8 mantissa bits, relative error ~4e-3 per rounding) separates them: tolerance 3e-2.
    x = {k: v.detach().bfloat16().requires_grad_() if v is not None else None for k, v in make_inputs(L=10).items()}
    assert_matches_reference(x, rtol=3e-2, atol=3e-2, chunk_size=CHUNK)


def test_dispatcher_runs_triton_on_cpu_under_the_interpreter():
    x = {k: v.detach().float() if v is not None else None for k, v in make_inputs(L=6).items()}
    got = selective_scan(**x, delta_softplus=True, backend="triton")
    torch.testing.assert_close(got, selective_scan_reference(**x, delta_softplus=True), rtol=1e-5, atol=1e-5)


def test_triton_saves_only_chunk_boundary_states_for_backward():
    b, d, n, L = 1, 2, 4, 3 * CHUNK + 1
    x = float32_inputs(b=b, d=d, n=n, L=L)
    y = selective_scan_triton(**x, chunk_size=CHUNK)
    saved_shapes = {tuple(t.shape) for t in y.grad_fn.saved_tensors if t is not None}
    assert (b, d, n, 4) in saved_shapes  # ceil(L / CHUNK) checkpoints
    assert all(s[-3:] != (d, n, L) for s in saved_shapes)  # never a state per time step


@pytest.mark.slow
@pytest.mark.parametrize("L", [2, 7, 31, 64, 65, 100])
@pytest.mark.parametrize("chunk", [4, 16])
@pytest.mark.parametrize("optional", [True, False])
def test_triton_sweep_matches_reference(L, chunk, optional):
    x = float32_inputs(b=2, d=6, n=5, L=L, optional=optional, seed=L)
    assert_matches_reference(x, softplus=optional, chunk_size=chunk, block_d=4)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_half_precision_sweep(dtype):
    x = {k: v.detach().to(dtype).requires_grad_() if v is not None else None for k, v in make_inputs(L=37).items()}
    assert_matches_reference(x, rtol=3e-2, atol=3e-2, chunk_size=16, block_d=2)


@pytest.mark.slow
def test_triton_large_dt_long_sequence_is_finite_and_matches_reference():
    x = float32_inputs(b=1, d=2, n=4, L=300, delta_scale=10.0)
    assert_matches_reference(x, chunk_size=64)


def test_triton_gradients_when_only_y_is_used():
    # The last state then gets no gradient (None reaches backward): the adjoint must start from zero.
    x = float32_inputs(b=1, d=3, n=2, L=10)
    inputs = [v for v in x.values() if v is not None]
    want = torch.autograd.grad(selective_scan_reference(**x, delta_softplus=True).sum(), inputs)
    got = torch.autograd.grad(selective_scan_triton(**x, delta_softplus=True, chunk_size=CHUNK).sum(), inputs)
    for name, g, w in zip([k for k, v in x.items() if v is not None], got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4, msg=f"grad {name}")
