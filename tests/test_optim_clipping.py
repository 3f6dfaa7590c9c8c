"""Global-norm gradient clipping against torch.nn.utils.clip_grad_norm_ (the oracle)."""

import pytest
import torch
from torch import nn

from cs336_basics.optim.clipping import clip_gradients, global_grad_norm
from tests.adapters import run_gradient_clipping


def _params_with_grads(scale: float, seed: int = 0) -> list[nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    params = [nn.Parameter(torch.randn(shape, generator=generator)) for shape in [(4, 5), (5,), (3, 2, 2)]]
    for p in params:
        p.grad = scale * torch.randn(p.shape, generator=generator)
    return params


def _clone(params: list[nn.Parameter]) -> list[nn.Parameter]:
    clones = []
    for p in params:
        clone = nn.Parameter(p.detach().clone())
        clone.grad = None if p.grad is None else p.grad.clone()
        clones.append(clone)
    return clones


@pytest.mark.parametrize("max_norm", [0.01, 1.0, 1e4])
def test_clip_gradients_matches_torch_clip_grad_norm(max_norm):
    ours = _params_with_grads(scale=3.0)
    theirs = _clone(ours)
    norm = clip_gradients(ours, max_norm)
    expected_norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm)
    assert norm == pytest.approx(float(expected_norm), rel=1e-6)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)


def test_clipped_gradients_have_the_target_norm_and_keep_their_direction():
    params = _params_with_grads(scale=10.0)
    before = torch.cat([p.grad.flatten() for p in params])
    pre_norm = clip_gradients(params, 0.5)
    after = torch.cat([p.grad.flatten() for p in params])
    assert pre_norm == pytest.approx(float(before.norm()), rel=1e-6)
    assert float(after.norm()) == pytest.approx(0.5, rel=1e-5)
    torch.testing.assert_close(after, before * (0.5 / (pre_norm + 1e-6)))


def test_the_epsilon_in_the_scale_matters_for_tiny_norms():
    # Norm 2e-6 clipped to 1e-6: the scale is 1e-6 / (2e-6 + 1e-6) = 1/3, not 1/2.
    param = nn.Parameter(torch.zeros(2, dtype=torch.float64))
    param.grad = torch.tensor([1.2e-6, 1.6e-6], dtype=torch.float64)
    clip_gradients([param], 1e-6)
    torch.testing.assert_close(param.grad, torch.tensor([0.4e-6, 1.6e-6 / 3], dtype=torch.float64))


def test_mixed_precision_gradients_share_one_global_norm():
    params = [nn.Parameter(torch.ones(4, dtype=dtype)) for dtype in (torch.bfloat16, torch.float32, torch.float64)]
    for p in params:
        p.grad = torch.full_like(p, 300.0)  # summed in bf16 the squares would round off; the norm must not
    assert clip_gradients(params, 1.0) == pytest.approx(300.0 * 12**0.5, rel=1e-6)
    for p in params:
        assert p.grad.dtype == p.dtype
        assert float(p.grad[0]) == pytest.approx(1.0 / 12**0.5, rel=1e-2)


def test_gradients_below_the_threshold_are_untouched():
    params = _params_with_grads(scale=1e-3)
    before = [p.grad.clone() for p in params]
    clip_gradients(params, 1.0)
    for p, g in zip(params, before, strict=True):
        assert torch.equal(p.grad, g)


def test_parameters_without_gradients_are_skipped():
    params = _params_with_grads(scale=5.0)
    params[1].grad = None
    theirs = _clone(params)
    norm = clip_gradients(params, 1.0)
    assert norm == pytest.approx(float(torch.nn.utils.clip_grad_norm_(theirs, 1.0)), rel=1e-6)
    assert params[1].grad is None


def test_clip_gradients_accepts_a_one_shot_iterator():
    params = _params_with_grads(scale=5.0)
    clip_gradients(iter(params), 1.0)
    assert float(torch.cat([p.grad.flatten() for p in params]).norm()) == pytest.approx(1.0, rel=1e-5)


def test_global_grad_norm_is_zero_without_gradients():
    assert float(global_grad_norm([nn.Parameter(torch.ones(3))])) == 0.0


def test_clip_gradients_rejects_a_non_positive_max_norm():
    with pytest.raises(ValueError, match="max_l2_norm"):
        clip_gradients(_params_with_grads(1.0), 0.0)


def test_adapter_run_gradient_clipping_clips_in_place_like_torch():
    ours = _params_with_grads(scale=2.0, seed=7)
    theirs = _clone(ours)
    run_gradient_clipping(ours, 1e-2)
    torch.nn.utils.clip_grad_norm_(theirs, 1e-2)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-7)
