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


def slow_mamba_block(
    block: MambaBlock, x: torch.Tensor, dt_clamp=None, conv_norm=False, out_norm=False
) -> torch.Tensor:
    """Mamba-1 block forward, one time step at a time; ``dt_clamp=(lo, hi)`` clamps dt after the softplus;
    ``out_norm``: Mamba-2's gated RMSNorm (normalise ``y * silu(z)``, then project)."""
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
    if out_norm:
        y = F.rms_norm(y, (d_inner,), block.out_norm.weight, eps=1e-5)
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


@pytest.mark.parametrize("out_norm", [False, True])
@pytest.mark.parametrize("prompt_len", [1, 2, 3, 6])
def test_prefill_then_steps_equal_full_forward(prompt_len, out_norm):
    block = _block(out_norm=out_norm)
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


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_out_norm_is_mamba2s_gated_rmsnorm_before_the_output_projection(backend):
    block = _block(out_norm=True, scan_backend=backend)
    assert "out_norm.weight" in block.state_dict() and "out_norm.weight" not in _block().state_dict()
    with torch.no_grad():
        block.out_norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, D_MODEL)
    torch.testing.assert_close(block(x), slow_mamba_block(block, x, out_norm=True), rtol=1e-4, atol=1e-5)
    # The output's scale no longer follows the input's (200 seeds: ratio 0.64-1.50; ~5e6 without out_norm).
    ratio = block(100 * x).norm(dim=-1).mean() / block(x).norm(dim=-1).mean()
    assert 0.25 < ratio < 4


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


def test_A_log_and_D_stay_float32_when_built_in_bfloat16_as_in_mamba_simple():
    block = MambaBlock(D_MODEL, D_STATE, D_CONV, EXPAND, dtype=torch.bfloat16)
    assert block.in_proj.weight.dtype == torch.bfloat16 and block.dt_bias.dtype == torch.bfloat16
    assert block.A_log.dtype == torch.float32 and block.D.dtype == torch.float32
    expected = torch.arange(1, D_STATE + 1, dtype=torch.float32).log().expand(block.d_inner, -1)
    assert torch.equal(block.A_log.detach(), expected)  # exact: never rounded through bfloat16
    y = block(torch.randn(2, 6, D_MODEL, dtype=torch.bfloat16))
    assert y.dtype == torch.bfloat16 and y.isfinite().all()


def test_casting_to_bfloat16_keeps_A_log_D_and_their_grads_float32_and_forward_works():
    block = _block()
    block(torch.randn(1, 5, D_MODEL)).sum().backward()  # gradients exist and travel with the cast
    A_log = block.A_log.detach().clone()
    block.to(torch.bfloat16)
    assert block.x_proj.weight.dtype == torch.bfloat16 and block.conv1d.weight.dtype == torch.bfloat16
    assert block.A_log.dtype == block.D.dtype == torch.float32
    assert block.A_log.grad.dtype == block.D.grad.dtype == torch.float32
    assert torch.equal(block.A_log.detach(), A_log)
    block.half()
    assert block.A_log.dtype == block.D.dtype == torch.float32 and block.in_proj.weight.dtype == torch.float16
    block.double()  # upcasts are not blocked
    assert block.A_log.dtype == block.D.dtype == block.in_proj.weight.dtype == torch.float64
    with torch.no_grad():  # longer memory and larger B, C: the SSM state now carries a visible part of the output
        block.dt_bias.fill_(-2.0)
        block.x_proj.weight.mul_(10.0)
    block.to(torch.bfloat16)
    state = block.make_state(2)
    assert state.conv.dtype == torch.bfloat16 and state.ssm.dtype == torch.float32
    torch.manual_seed(0)
    x = torch.randn(2, 6, D_MODEL, dtype=torch.bfloat16)
    with torch.no_grad():
        y = block(x)
        stepped = torch.cat([block(x[:, :3], state=state), block(x[:, 3:], state=state)], dim=1)
        state = block.make_state(2)
        prefix = block(x[:, :3], state=state)
        state.ssm.zero_()  # what a decoding path that lost the SSM state would compute
        lost = torch.cat([prefix, block(x[:, 3:], state=state)], dim=1)
    assert y.dtype == torch.bfloat16 and y.isfinite().all()
    torch.testing.assert_close(stepped, y, rtol=2e-2, atol=5e-3)  # bf16 rounding of the two paths (~3e-3 here)
    error, lost_error = ((t.float() - y.float()).abs().max() for t in (stepped, lost))
    assert lost_error > 3 * error  # the check can see a lost state (~1.7e-2 here)


def _uniform_check(weight: torch.Tensor, fan_in: int) -> None:
    """U(-b, b) with b = 1/sqrt(fan_in) (nn.Linear's default): inside the bound, reaching it, std b/sqrt(3) and
    mean |w| = b/2 (a normal of that std would give 0.46 b)."""
    bound = 1 / math.sqrt(fan_in)
    w = weight.detach().double()
    assert w.abs().max().item() <= bound and w.abs().max().item() > 0.98 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)
    assert (w.abs().mean() / bound).item() == pytest.approx(0.5, abs=0.01)


def test_default_init_draws_projections_like_mamba_simple():
    """mamba_simple keeps nn.Linear's default for in_proj/x_proj/out_proj; conv1d, dt_proj, dt, A, D as before."""
    torch.manual_seed(0)
    block = MambaBlock(64, d_state=16, expand=2)  # d_inner 128, dt_rank 4
    assert block.init == "mamba_simple"
    _uniform_check(block.in_proj.weight, 64)
    _uniform_check(block.x_proj.weight, 128)
    _uniform_check(block.out_proj.weight, 128)
    conv_bound = 1 / math.sqrt(D_CONV)  # nn.Conv1d's default, weight and bias
    assert block.conv1d.weight.abs().max() <= conv_bound and block.conv1d.bias.abs().max() <= conv_bound
    assert block.dt_proj.weight.abs().max() <= 4**-0.5 and block.dt_proj.weight.abs().max() > 0.9 * 4**-0.5


def test_cs336_init_option_is_wider_by_the_documented_factors():
    torch.manual_seed(0)
    old = MambaBlock(64, d_state=16, expand=2, init="cs336")
    torch.manual_seed(0)
    ref = MambaBlock(64, d_state=16, expand=2)
    shapes = (("in_proj", 64, 256, 1.1), ("x_proj", 128, 36, 2.1), ("out_proj", 128, 64, 2.0))
    for name, fan_in, fan_out, factor in shapes:
        w = getattr(old, name).weight.detach()
        std = math.sqrt(2 / (fan_in + fan_out))
        assert w.std().item() == pytest.approx(0.986 * std, rel=0.05)  # N(0, std) cut at +-3 std: 0.986 std
        assert w.abs().max().item() <= 3 * std
        ratio = (w.std() / getattr(ref, name).weight.std()).item()
        assert ratio == pytest.approx(factor, abs=0.1), name


def test_cs336_init_reproduces_the_previous_default_bit_for_bit():
    """Per-parameter sums of MambaBlock(16, 4) under manual_seed(0), recorded before the init option existed."""
    torch.manual_seed(0)
    block = MambaBlock(16, 4, init="cs336")
    recorded = {
        "dt_bias": -139.36266374588013, "A_log": 101.69772338867188, "D": 32.0, "in_proj.weight": 2.338308157210122,
        "conv1d.weight": -1.2940217852592468, "conv1d.bias": -0.7251529693603516,
        "x_proj.weight": -2.934340121515561, "dt_proj.weight": 7.106540083885193,
        "out_proj.weight": -4.847691912960727,
    }  # fmt: skip
    assert {name: float(p.detach().double().sum()) for name, p in block.named_parameters()} == recorded


def test_init_option_reaches_every_mixer_from_the_spec_and_bad_values_fail():
    from dataclasses import replace

    from cs336_basics.models.factory import model_spec
    from cs336_basics.models.language_model import LanguageModel

    spec = model_spec("hybrid", 32, 16, 16, 2, pattern="AMAM", d_state=4)
    assert spec.ssm.init == "mamba_simple"
    model = LanguageModel(replace(spec, ssm=replace(spec.ssm, init="cs336")))
    assert [layer.mixer.init for layer in model.layers if hasattr(layer, "mixer")] == ["cs336", "cs336"]
    with pytest.raises(ValueError, match="ssm.init"):
        replace(spec, ssm=replace(spec.ssm, init="xavier")).validate()
    with pytest.raises(ValueError, match="init"):
        _block(init="xavier")
