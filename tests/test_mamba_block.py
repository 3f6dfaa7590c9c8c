"""Specification of the Mamba mixer block (cs336_basics/models/mamba_block.py).

Oracle: ``slow_mamba_block`` below, written independently with plain torch, ``torch.nn.functional.conv1d`` for the
conv, ``F.softplus`` / ``F.silu`` / ``F.rms_norm`` and a sequential Python loop for the scan.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.models.base import parameter_groups
from cs336_basics.models.mamba_block import MambaBlock

D_MODEL, D_STATE, D_CONV, EXPAND = 8, 4, 4, 2


pytestmark = pytest.mark.usefixtures("one_thread")


def slow_mamba_block(block: MambaBlock, x: torch.Tensor, dt_clamp=None, conv_norm=False) -> torch.Tensor:
    """Mamba-1 block forward, one time step at a time; ``dt_clamp=(lo, hi)`` clamps dt after the softplus."""
    d_inner, n, R = block.d_inner, block.d_state, block.dt_rank
    xz = x @ block.in_proj.weight.T
    x_in, z = xz[..., :d_inner], xz[..., d_inner:]  # (b, L, d_inner)
    k = block.conv1d.weight.shape[1]
    padded = F.pad(x_in.transpose(1, 2), (k - 1, 0))  # (b, d_inner, k - 1 + L)
    conv = F.conv1d(padded, block.conv1d.weight[:, None], block.conv1d.bias, groups=d_inner)
    u = F.silu(conv.transpose(1, 2))  # (b, L, d_inner)
    if conv_norm:
        u = F.rms_norm(u, (d_inner,), block.conv_norm.weight, eps=1e-5)
    x_dbl = u @ block.x_proj.weight.T
    dt_low, Bm, Cm = x_dbl[..., :R], x_dbl[..., R : R + n], x_dbl[..., R + n :]
    dt = F.softplus(dt_low @ block.dt_proj.weight.T + block.dt_bias)  # (b, L, d_inner)
    if dt_clamp is not None:
        dt = dt.clamp(*dt_clamp)
    A = -torch.exp(block.A_log)  # (d_inner, n)
    h = torch.zeros(x.shape[0], d_inner, n)
    ys = []
    for t in range(x.shape[1]):
        h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * Bm[:, t, None, :] * u[:, t, :, None]
        ys.append((h * Cm[:, t, None, :]).sum(-1) + block.D * u[:, t])
    y = torch.stack(ys, dim=1) * F.silu(z)
    return y @ block.out_proj.weight.T


def _block(**kwargs) -> MambaBlock:
    return MambaBlock(D_MODEL, D_STATE, D_CONV, EXPAND, **kwargs)


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_block_matches_slow_reference(backend):
    block = _block(scan_backend=backend)
    x = torch.randn(2, 9, D_MODEL)
    torch.testing.assert_close(block(x), slow_mamba_block(block, x), rtol=1e-4, atol=1e-5)


def test_block_gradients_match_slow_reference():
    block = _block()
    x = torch.randn(2, 7, D_MODEL, requires_grad=True)
    block(x).square().sum().backward()
    ours = {name: p.grad.clone() for name, p in block.named_parameters()} | {"x": x.grad.clone()}
    block.zero_grad()
    x.grad = None
    slow_mamba_block(block, x).square().sum().backward()
    theirs = {name: p.grad for name, p in block.named_parameters()} | {"x": x.grad}
    for name, grad in ours.items():
        torch.testing.assert_close(grad, theirs[name], rtol=1e-4, atol=1e-5, msg=f"gradient of {name}")


def test_block_is_causal():
    block = _block()
    x = torch.randn(1, 12, D_MODEL)
    x2 = x.clone()
    x2[:, 7:] = torch.randn(1, 5, D_MODEL)
    y, y2 = block(x), block(x2)
    torch.testing.assert_close(y[:, :7], y2[:, :7])
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


@pytest.mark.parametrize("prompt_len", [1, 2, 3, 6])
def test_prefill_then_steps_equal_full_forward(prompt_len):
    block = _block()
    x = torch.randn(2, 10, D_MODEL)
    full = block(x)
    state = block.make_state(2)
    with torch.no_grad():
        parts = [block(x[:, :prompt_len], state=state)]
        parts += [block(x[:, t : t + 1], state=state) for t in range(prompt_len, 10)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)
    assert state.seen == 10


def test_state_holds_last_conv_inputs_and_fixed_size():
    block = _block()
    state = block.make_state(3)
    assert state.conv.shape == (3, block.d_inner, D_CONV - 1)
    assert state.ssm.shape == (3, block.d_inner, D_STATE)
    with torch.no_grad():
        block(torch.randn(3, 2, D_MODEL), state=state)  # shorter than d_conv - 1: zero-filled on the left
    assert torch.equal(state.conv[..., 0], torch.zeros(3, block.d_inner))


def test_init_dt_after_softplus_is_log_uniform_in_paper_range():
    block = MambaBlock(64, d_state=16, expand=4)  # 256 channels
    dt = F.softplus(block.dt_bias)
    assert dt.min() >= 1e-3 * (1 - 1e-4) and dt.max() <= 1e-1 * (1 + 1e-4)
    log_dt = dt.log()
    mid = (math.log(1e-3) + math.log(1e-1)) / 2
    assert abs(log_dt.mean().item() - mid) < 0.4  # log-uniform: the mean log sits mid-range (std of mean ~0.08)
    assert (dt < 3e-3).any() and (dt > 3e-2).any()


def test_init_dt_floor_applies():
    block = MambaBlock(16, dt_min=1e-6, dt_max=1e-5, dt_init_floor=1e-4)
    torch.testing.assert_close(F.softplus(block.dt_bias), torch.full((32,), 1e-4), rtol=1e-4, atol=0)


def test_init_A_is_s4d_real_and_D_is_one():
    block = _block()
    expected = torch.arange(1, D_STATE + 1, dtype=torch.float32).log().expand(block.d_inner, -1)
    torch.testing.assert_close(block.A_log.detach(), expected)
    assert torch.equal(block.D.detach(), torch.ones(block.d_inner))
    assert (block.ssm_matrix() < 0).all()


def test_dt_rank_defaults_to_ceil_d_model_over_16():
    assert MambaBlock(8).dt_rank == 1 and MambaBlock(40).dt_rank == 3 and MambaBlock(8, dt_rank=5).dt_rank == 5


def test_A_log_and_D_are_excluded_from_weight_decay():
    block = _block()
    decay, no_decay = parameter_groups(block, weight_decay=0.1)
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert id(block.A_log) in no_decay_ids and id(block.D) in no_decay_ids  # A_log is a matrix, so it needs the mark
    assert id(block.in_proj.weight) in {id(p) for p in decay["params"]}


def test_out_proj_scale_multiplies_init():
    torch.manual_seed(1)
    plain = MambaBlock(64)
    torch.manual_seed(1)
    scaled = MambaBlock(64, out_proj_scale=0.25)
    torch.testing.assert_close(scaled.out_proj.weight, plain.out_proj.weight * 0.25)


def test_dt_limit_clamps_step_sizes_and_matches_clamped_reference():
    block = _block(dt_limit=(1e-3, 0.5))
    with torch.no_grad():
        block.dt_bias[: block.d_inner // 2] = 20.0  # softplus ~ 20, far above the limit
        block.dt_bias[block.d_inner // 2 :] = -20.0  # softplus ~ 2e-9, far below
    dt = block.step_sizes(torch.zeros(1, block.d_inner, 3), block.ssm_matrix())
    assert dt.min() >= 1e-3 and dt.max() <= 0.5
    x = torch.randn(2, 6, D_MODEL)
    torch.testing.assert_close(block(x), slow_mamba_block(block, x, dt_clamp=(1e-3, 0.5)), rtol=1e-4, atol=1e-5)


def test_unfused_dt_path_equals_fused_when_limits_never_bind():
    torch.manual_seed(3)
    fused = _block()
    torch.manual_seed(3)
    unfused = _block(dt_limit=(0.0, 1e9))
    x = torch.randn(2, 5, D_MODEL)
    torch.testing.assert_close(unfused(x), fused(x))


def test_a_min_magnitude_floors_A():
    block, plain = _block(a_min_magnitude=0.5), _block()
    for b in (block, plain):
        with torch.no_grad():
            b.A_log.fill_(-10.0)  # |A| = 4.5e-5
    assert block.ssm_matrix().abs().min() >= 0.5
    assert plain.ssm_matrix().abs().max() < 1e-4


@pytest.mark.parametrize("bias", [30.0, -30.0])
def test_decay_limit_keeps_every_per_step_decay_in_range(bias):
    block = _block(decay_limit=(0.05, 0.999))
    with torch.no_grad():
        block.dt_bias.fill_(bias)
    A = block.ssm_matrix()
    dt = block.step_sizes(torch.zeros(1, block.d_inner), A)  # (1, d)
    decay = torch.exp(dt[..., None] * A)  # (1, d, n)
    assert decay.min() >= 0.05 - 1e-6 and decay.max() <= 0.999 + 1e-6
    unlimited = torch.exp(_block().step_sizes(torch.full((1, block.d_inner), bias), A)[..., None] * A)
    assert unlimited.min() < 0.05 or unlimited.max() > 0.999  # the limit binds here


def test_conv_norm_adds_rmsnorm_after_conv():
    block = _block(conv_norm=True)
    assert "conv_norm.weight" in block.state_dict()
    with torch.no_grad():
        block.conv_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, D_MODEL)
    torch.testing.assert_close(block(x), slow_mamba_block(block, x, conv_norm=True), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dt_limit": (0.5, 0.1)}, "dt_limit"),
        ({"decay_limit": (0.9, 0.5)}, "decay_limit"),
        ({"a_min_magnitude": 0.0}, "a_min_magnitude"),
        ({"dt_min": 0.2, "dt_max": 0.1}, "dt_min"),
    ],
)
def test_bad_options_raise_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _block(**kwargs)


def _saved_bytes(fn) -> int:
    """Bytes of tensors autograd saves for the backward while running ``fn``."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


def test_checkpoint_scan_gives_same_gradients_and_saves_less():
    # d_state 16 (Mamba's): the scan's per-token states are then what dominates a block's saved tensors. (At d_state
    # 4 the chunked scan's own saved inputs and chunk starts are already close to what checkpointing keeps.)
    torch.manual_seed(5)
    plain = MambaBlock(D_MODEL, 16, D_CONV, EXPAND)
    torch.manual_seed(5)
    ckpt = MambaBlock(D_MODEL, 16, D_CONV, EXPAND, checkpoint_scan=True)
    x = torch.randn(2, 64, D_MODEL)
    grads = []
    for block in (plain, ckpt):
        block(x).square().sum().backward()
        grads.append({n: p.grad for n, p in block.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=f"gradient of {name}")
    assert _saved_bytes(lambda: ckpt(x)) < 0.5 * _saved_bytes(lambda: plain(x))
