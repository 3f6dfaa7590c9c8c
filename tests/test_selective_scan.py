"""Specification of the selective scan's PyTorch backends, dispatcher and single-step decode (CPU, fast).

Oracles: an explicit double-sum form of the recurrence (for the reference), the sequential reference (for the
chunked scan, in float64), and ``torch.autograd.gradcheck`` (finite differences) for the chunked scan's gradients.
"""

from __future__ import annotations

import gc
import logging

import pytest
import torch

import kernels.selective_scan as ss
from kernels.selective_scan import chunked_autograd, resolve_backend, selective_scan, selective_scan_step, workspace
from kernels.selective_scan.chunked import selective_scan_chunked
from kernels.selective_scan.reference import selective_scan_reference
from tests.adapters import run_selective_scan

NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(b=2, d=3, n=4, L=13, dtype=torch.float64, optional=True, delta_scale=1.0, seed=0):
    """Random scan inputs (dict by argument name) with A < 0 as in Mamba; D, z, delta_bias None unless optional."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    x = {
        "u": r(b, d, L),
        "delta": r(b, d, L) * delta_scale,
        "A": -torch.rand(d, n, generator=g, dtype=torch.float64) * 2 - 0.1,
        "B": r(b, n, L),
        "C": r(b, n, L),
        "D": r(d) if optional else None,
        "z": r(b, d, L) if optional else None,
        "delta_bias": r(d) if optional else None,
    }
    return {k: v.to(dtype).requires_grad_() if v is not None else None for k, v in x.items()}


def run_with_grads(fn, x, softplus=True, **kwargs):
    """Output, last state and the gradients of a fixed random functional of both, for every non-None input."""
    y, last = fn(**x, delta_softplus=softplus, return_last_state=True, **kwargs)
    g = torch.Generator().manual_seed(1)
    w_y = torch.randn(y.shape, generator=g, dtype=torch.float64).to(y.dtype)
    w_h = torch.randn(last.shape, generator=g, dtype=torch.float64).to(last.dtype)
    inputs = [x[k] for k in NAMES if x[k] is not None]
    grads = torch.autograd.grad((y * w_y).sum() + (last * w_h).sum(), inputs)
    return y, last, dict(zip([k for k in NAMES if x[k] is not None], grads, strict=True))


def test_reference_matches_explicit_sum_form():
    # h_t = sum_{s<=t} exp(A * sum_{s<r<=t} dt_r) * dt_s * B_s * u_s, written out with no recurrence at all.
    x = make_inputs(b=1, d=2, n=3, L=6, optional=False)
    u, dt, A, B, C = (x[k].detach() for k in ("u", "delta", "A", "B", "C"))
    dt = dt.abs()
    y = selective_scan_reference(u, dt, A, B, C)
    for t in range(6):
        h = sum(
            torch.exp(A * dt[0, :, s + 1 : t + 1].sum(-1)[:, None]) * (dt[0, :, s] * u[0, :, s])[:, None] * B[0, :, s]
            for s in range(t + 1)
        )
        torch.testing.assert_close(y[0, :, t], (h * C[0, :, t]).sum(-1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("L", [1, 7, 8, 9, 33])
@pytest.mark.parametrize("optional", [True, False])
def test_chunked_matches_reference_values_and_gradients_float64(L, optional):
    x = make_inputs(L=L, optional=optional)
    ref = run_with_grads(selective_scan_reference, x, softplus=optional)
    got = run_with_grads(selective_scan_chunked, x, softplus=optional, chunk_size=8)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-10)
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], rtol=1e-9, atol=1e-9, msg=f"grad {name}")


def test_chunked_passes_gradcheck():
    x = make_inputs(b=1, d=2, n=2, L=5)
    names = [k for k in NAMES if x[k] is not None]

    def f(*args):
        return selective_scan_chunked(**dict(zip(names, args, strict=True)), delta_softplus=True, chunk_size=2)

    assert torch.autograd.gradcheck(f, tuple(x[k] for k in names))


def test_chunked_long_sequence_with_large_dt_stays_finite_and_matches_reference():
    # L = 4096 with dt up to ~30 and A down to -2: cumulative log-decay reaches ~ -1e5, far past float32 exp range.
    x64 = make_inputs(b=1, d=2, n=4, L=4096, delta_scale=10.0)
    x32 = {k: v.detach().float().requires_grad_() if v is not None else None for k, v in x64.items()}
    y, last, grads = run_with_grads(selective_scan_chunked, x32)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    assert all(torch.isfinite(g).all() for g in grads.values())
    ref = run_with_grads(selective_scan_reference, x64)
    torch.testing.assert_close(y.double(), ref[0], rtol=1e-4, atol=1e-4)
    for name in ref[2]:
        scale = ref[2][name].abs().max().clamp_min(1e-12)  # compare relative to the largest entry; never 0/0
        torch.testing.assert_close(grads[name].double() / scale, ref[2][name] / scale, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_chunked_half_precision_inputs_return_input_dtype_and_match_float32(dtype):
    x = {k: v.detach().to(dtype) if v is not None else None for k, v in make_inputs(L=40).items()}
    y = selective_scan_chunked(**x, delta_softplus=True)
    ref = selective_scan_reference(
        **{k: v.float() if v is not None else None for k, v in x.items()}, delta_softplus=True
    )
    assert y.dtype == dtype
    # State accumulates in float32, so the output is the float32 result rounded once: within one unit in the last
    # place of the half type (2^-10 for fp16, 2^-7 for bf16; equal in every element here). A scan that keeps its
    # state in the half type differs in most elements and fails this (max error 8.9e-3 in fp16, 0.10 in bf16).
    one_ulp = torch.finfo(dtype).eps  # 2^-10 for fp16, 2^-7 for bf16
    torch.testing.assert_close(y.float(), ref.to(dtype).float(), rtol=one_ulp, atol=1e-6)


def test_iterated_step_equals_full_scan_and_last_state():
    x = {k: v.detach() if v is not None else None for k, v in make_inputs(L=11).items()}
    y, last = selective_scan_reference(**x, delta_softplus=True, return_last_state=True)
    h = torch.zeros(2, 3, 4, dtype=torch.float64)
    ys = []
    for t in range(11):
        y_t, h = selective_scan_step(
            h, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t],
            D=x["D"], z_t=x["z"][..., t], delta_bias=x["delta_bias"], delta_softplus=True,
        )  # fmt: skip
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, dim=-1), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h, last, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["chunked", "auto"])
def test_return_last_state_matches_reference(backend):
    x = {k: v.detach().float() if v is not None else None for k, v in make_inputs(L=30).items()}
    _, want = selective_scan_reference(**x, delta_softplus=True, return_last_state=True)
    _, got = selective_scan(**x, delta_softplus=True, return_last_state=True, backend=backend)
    assert got.dtype == torch.float32 and got.shape == (2, 3, 4)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_adapter_runs_every_cpu_backend_to_the_same_output():
    x = {k: v.detach().float() if v is not None else None for k, v in make_inputs(L=20).items()}
    outs = [run_selective_scan(**x, delta_softplus=True, backend=b) for b in ("reference", "chunked", "auto")]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(outs[2], outs[0], rtol=1e-5, atol=1e-5)


def test_auto_resolves_to_chunked_on_cpu_and_logs_the_choice_once(caplog, monkeypatch):
    monkeypatch.setattr(ss, "_logged_choices", set())
    x = {k: v.detach().float() if v is not None else None for k, v in make_inputs(L=4).items()}
    assert resolve_backend("cpu") == "chunked"
    with caplog.at_level(logging.INFO, logger="kernels.selective_scan"):
        selective_scan(**x)
        selective_scan(**x)
    assert [r.getMessage() for r in caplog.records].count(
        "selective_scan: backend 'auto' resolved to 'chunked' on cpu"
    ) == 1


def test_unknown_backend_is_rejected():
    x = {k: v.detach() if v is not None else None for k, v in make_inputs(L=4).items()}
    with pytest.raises(ValueError, match="unknown backend 'cuda_fast'"):
        selective_scan(**x, backend="cuda_fast")


def test_triton_on_cpu_without_interpreter_is_rejected(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        resolve_backend("cpu", "triton")


@pytest.mark.parametrize(
    ("name", "bad_shape", "message"),
    [
        ("u", (2, 3), "u has shape"),
        ("delta", (2, 3, 12), "delta has shape"),
        ("A", (4, 4), "A has shape"),
        ("B", (2, 5, 13), "B has shape"),
        ("C", (2, 4, 12), "C has shape"),
        ("D", (4,), "D has shape"),
        ("z", (1, 3, 13), "z has shape"),
        ("delta_bias", (3, 1), "delta_bias has shape"),
    ],
)
def test_shape_mismatch_gives_one_line_error_naming_the_argument(name, bad_shape, message):
    x = {k: v.detach() if v is not None else None for k, v in make_inputs().items()}
    x[name] = torch.zeros(bad_shape, dtype=torch.float64)
    with pytest.raises(ValueError, match=message) as info:
        selective_scan(**x)
    assert "\n" not in str(info.value)


def test_integer_input_is_rejected():
    x = {k: v.detach() if v is not None else None for k, v in make_inputs().items()}
    x["u"] = x["u"].long()
    with pytest.raises(ValueError, match="u has dtype torch.int64"):
        selective_scan(**x)


def test_step_with_mismatched_state_is_rejected():
    with pytest.raises(ValueError, match="selective_scan_step"):
        selective_scan_step(torch.zeros(2, 3, 4), torch.zeros(2, 5), torch.zeros(2, 5), torch.zeros(3, 4),
                            torch.zeros(2, 4), torch.zeros(2, 4))  # fmt: skip


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 64])
def test_chunked_any_chunk_size_matches_reference_values_and_gradients(chunk_size):
    # 13 steps: chunk sizes that divide nothing, one step per chunk, and a single chunk longer than the sequence.
    x = make_inputs(L=13)
    ref = run_with_grads(selective_scan_reference, x)
    got = run_with_grads(selective_scan_chunked, x, chunk_size=chunk_size)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-10)
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], rtol=1e-9, atol=1e-9, msg=f"grad {name}")


@pytest.mark.parametrize("use", ["y", "last_state"])
def test_chunked_gradient_through_only_one_output_matches_reference(use):
    # The hand-written backward receives a zero gradient for the unused output; it must not leak into the others.
    x = make_inputs(L=19)
    inputs = [x[k] for k in NAMES]
    grads = []
    for fn in (selective_scan_reference, selective_scan_chunked):
        y, last = fn(**x, delta_softplus=True, return_last_state=True)
        out = y if use == "y" else last
        loss = (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)).sum()
        # The last state does not depend on C: the reference leaves it out of the graph, the chunked scan gives 0.
        grads.append(torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True))
    for name, want, got in zip(NAMES, *grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=f"grad {name}")


def test_chunked_backward_twice_with_retained_graph_gives_the_same_gradients():
    # The backward must not modify the tensors it saved, or a second backward over the same graph would differ.
    x = make_inputs(L=21)
    inputs = [x[k] for k in NAMES]
    y = selective_scan_chunked(**x, delta_softplus=True, chunk_size=4)
    first = torch.autograd.grad(y.square().sum(), inputs, retain_graph=True)
    second = torch.autograd.grad(y.square().sum(), inputs)
    for name, a, b in zip(NAMES, first, second, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"grad {name}")


def test_chunked_scans_sharing_scratch_buffers_keep_their_own_results():
    # Several layers: every forward runs before any backward, and all share the scratch buffers (same shapes, and a
    # larger one in between that regrows them). Each must still match its own reference, outputs and gradients.
    xs = [make_inputs(L=L, seed=s) for s, L in enumerate((17, 17, 40, 17))]
    refs = [run_with_grads(selective_scan_reference, x) for x in xs]
    outs = [selective_scan_chunked(**x, delta_softplus=True, return_last_state=True, chunk_size=4) for x in xs]
    for (y, last), (y_ref, last_ref, _) in zip(outs, refs, strict=True):
        torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(last, last_ref, rtol=1e-10, atol=1e-10)
    for x, (y, last), (_, _, grads_ref) in zip(reversed(xs), reversed(outs), reversed(refs), strict=True):
        g = torch.Generator().manual_seed(1)
        w_y = torch.randn(y.shape, generator=g, dtype=torch.float64)
        w_h = torch.randn(last.shape, generator=g, dtype=torch.float64)
        inputs = [x[k] for k in NAMES]
        grads = torch.autograd.grad((y * w_y).sum() + (last * w_h).sum(), inputs)
        for name, got in zip(NAMES, grads, strict=True):
            torch.testing.assert_close(got, grads_ref[name], rtol=1e-9, atol=1e-9, msg=f"grad {name}")


def test_chunked_scan_over_the_size_limit_recomputes_and_keeps_a_fraction_of_the_states(monkeypatch):
    # Above SAVE_STATES_MAX_BYTES the backward recomputes decays and states from the chunk starts: same values and
    # gradients, and autograd keeps O(b d n L / T) -- no saved tensor as large as the (b, d, L, n) states.
    monkeypatch.setattr(chunked_autograd, "SAVE_STATES_MAX_BYTES", 0)
    x = make_inputs(L=29)
    ref = run_with_grads(selective_scan_reference, x)
    got = run_with_grads(selective_scan_chunked, x, chunk_size=4)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-10)
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], rtol=1e-9, atol=1e-9, msg=f"grad {name}")

    b, d, n, L = 2, 8, 16, 256
    x = make_inputs(b=b, d=d, n=n, L=L, dtype=torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        y = selective_scan_chunked(**x, delta_softplus=True)
    assert saved and max(saved) <= b * d * n * L / 8, f"saved a tensor of {max(saved)} values; states: {b * d * n * L}"
    assert y.grad_fn is not None


def test_kept_states_go_back_to_the_free_list_after_backward_or_when_the_graph_is_dropped():
    workspace.release()
    x = make_inputs(L=40, dtype=torch.float32)
    y = selective_scan_chunked(**x, delta_softplus=True, chunk_size=8)
    assert workspace.cached_bytes() == 0, "decays and states are leased to the graph, not in the free list"
    torch.autograd.grad(y.sum(), [x["u"]])
    pooled = workspace.cached_bytes()
    assert pooled >= 2 * 8 * 5 * 2 * 3 * 4 * 4, "the backward gave its decays and states back"
    y = selective_scan_chunked(**x, delta_softplus=True, chunk_size=8)  # takes them again ...
    assert workspace.cached_bytes() < pooled
    del y  # ... and returns them with its graph, though no backward ran
    gc.collect()
    assert workspace.cached_bytes() == pooled


def test_second_backward_after_the_kept_states_were_reused_recomputes_them():
    # Backward 1 gives its buffers back; another scan's forward takes and overwrites them; a second backward over
    # the retained first graph must notice and recompute, giving exactly the first gradients.
    x1, x2 = make_inputs(L=21, seed=3), make_inputs(L=21, seed=4)
    inputs = [x1[k] for k in NAMES]
    y1 = selective_scan_chunked(**x1, delta_softplus=True, chunk_size=4)
    first = torch.autograd.grad(y1.square().sum(), inputs, retain_graph=True)
    y2 = selective_scan_chunked(**x2, delta_softplus=True, chunk_size=4)
    second = torch.autograd.grad(y1.square().sum(), inputs)
    for name, a, b in zip(NAMES, first, second, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=f"grad {name}")
    assert y2.grad_fn is not None


def test_scan_under_inference_mode_leaves_no_buffer_that_breaks_later_training(monkeypatch):
    # Buffers created under torch.inference_mode() are inference tensors; reusing one in a training call's in-place
    # writes would raise. Recompute mode uses the scratch buffers in both forward and backward.
    monkeypatch.setattr(chunked_autograd, "SAVE_STATES_MAX_BYTES", 0)
    workspace.release()
    x = make_inputs(L=40, dtype=torch.float32)
    with torch.inference_mode():
        selective_scan_chunked(**{k: v.detach() for k, v in x.items()}, delta_softplus=True)
    ref = run_with_grads(selective_scan_reference, x)
    got = run_with_grads(selective_scan_chunked, x)
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], rtol=1e-4, atol=1e-4, msg=f"grad {name}")
