"""Specification of the Hebbian fast-weight branch: the parallel form equals the recurrence, causality, state."""

import torch

from cs336_basics.models.fast_weights import FastWeightBranch


def _recurrent_oracle(branch: FastWeightBranch, x: torch.Tensor) -> torch.Tensor:
    """A_t = lambda A_{t-1} + eta k_t v_t^T, y_t = q_t A_t, one token at a time with torch built-ins."""
    b, T, d = x.shape
    H, hd = branch.num_heads, branch.head_dim
    h = branch.norm(x)
    q = torch.nn.functional.normalize(branch.q_proj(h).view(b, T, H, hd), dim=-1, eps=1e-12)
    k = torch.nn.functional.normalize(branch.k_proj(h).view(b, T, H, hd), dim=-1, eps=1e-12)
    v = branch.v_proj(h).view(b, T, H, hd)
    lam = torch.sigmoid(branch.decay_logit).view(1, H, 1, 1)
    eta = torch.nn.functional.softplus(branch.rate_logit).view(1, H, 1, 1)
    A = torch.zeros(b, H, hd, hd)
    ys = []
    for t in range(T):
        A = lam * A + eta * k[:, t, :, :, None] * v[:, t, :, None, :]
        ys.append(torch.einsum("bhi,bhij->bhj", q[:, t], A).reshape(b, d))
    return branch.out_proj(torch.stack(ys, dim=1))


def test_parallel_form_equals_hebbian_recurrence():
    branch = FastWeightBranch(d_model=16, num_heads=4)
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(branch(x), _recurrent_oracle(branch, x), rtol=1e-4, atol=1e-5)


def test_branch_is_causal():
    branch = FastWeightBranch(d_model=16, num_heads=2)
    x = torch.randn(1, 8, 16)
    y = x.clone()
    y[:, 5:] = torch.randn(1, 3, 16)
    torch.testing.assert_close(branch(x)[:, :5], branch(y)[:, :5])


def test_carried_state_matches_one_full_pass():
    branch = FastWeightBranch(d_model=16, num_heads=4)
    x = torch.randn(2, 9, 16)
    state = branch.make_state(2)
    pieces = [branch(x[:, :4], state), branch(x[:, 4:5], state), branch(x[:, 5:], state)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), branch(x), rtol=1e-4, atol=1e-5)


def test_rate_and_decay_are_learned():
    branch = FastWeightBranch(d_model=8, num_heads=2)
    branch(torch.randn(1, 5, 8)).square().sum().backward()
    assert branch.rate_logit.grad.abs().min() > 0
    assert branch.decay_logit.grad.abs().min() > 0
    decay, rate = branch.decay_and_rate()
    torch.testing.assert_close(decay, torch.full((2,), 0.9))
    torch.testing.assert_close(rate, torch.full((2,), 0.5))
