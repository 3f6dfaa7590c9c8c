"""Specification of cs336_basics.nn.functional: softmax, log-softmax, SiLU, cross-entropy, perplexity.

Oracles: torch.softmax / torch.log_softmax / F.silu / F.cross_entropy and closed forms.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.nn.functional import cross_entropy, log_softmax, masked_softmax, perplexity, softmax
from tests.adapters import run_cross_entropy, run_silu, run_softmax


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_matches_torch_on_every_dim(dim):
    x = torch.randn(4, 5, 6)
    torch.testing.assert_close(run_softmax(x, dim=dim), torch.softmax(x, dim=dim))


def test_softmax_is_stable_for_inputs_shifted_by_a_large_constant():
    x = torch.randn(3, 7) + 1e4  # exp(1e4) overflows float32: a naive softmax gives nan
    torch.testing.assert_close(run_softmax(x, dim=-1), torch.softmax(x, dim=-1))
    torch.testing.assert_close(run_softmax(x * 1e4, dim=-1), torch.softmax(x * 1e4, dim=-1))


def test_softmax_gradient_matches_torch():
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(3, 6, dtype=torch.float64)
    (grad,) = torch.autograd.grad((softmax(x, dim=-1) * weights).sum(), x)
    (expected,) = torch.autograd.grad((torch.softmax(x, dim=-1) * weights).sum(), x)
    torch.testing.assert_close(grad, expected)


def test_log_softmax_matches_torch_even_where_softmax_underflows():
    x = torch.tensor([[0.0, -200.0, 5.0], [1e4, 0.0, -1e4]])
    torch.testing.assert_close(log_softmax(x, dim=-1), torch.log_softmax(x, dim=-1))


def test_silu_matches_torch():
    x = torch.randn(5, 8) * 4
    torch.testing.assert_close(run_silu(x), F.silu(x))


def test_cross_entropy_matches_torch():
    logits, targets = torch.randn(8, 11), torch.randint(0, 11, (8,))
    torch.testing.assert_close(run_cross_entropy(logits, targets), F.cross_entropy(logits, targets))


def test_cross_entropy_is_stable_for_logits_scaled_by_1000():
    logits, targets = torch.randn(8, 11) * 1000, torch.randint(0, 11, (8,))
    loss = run_cross_entropy(logits, targets)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets))


def test_cross_entropy_averages_over_all_leading_dims():
    logits, targets = torch.randn(2, 3, 5, 7), torch.randint(0, 7, (2, 3, 5))
    expected = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1))
    torch.testing.assert_close(cross_entropy(logits, targets), expected)


def test_cross_entropy_gradient_matches_torch():
    logits = torch.randn(6, 9, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (6,))
    (grad,) = torch.autograd.grad(cross_entropy(logits, targets), logits)
    (expected,) = torch.autograd.grad(F.cross_entropy(logits, targets), logits)
    torch.testing.assert_close(grad, expected)


def test_cross_entropy_of_uniform_logits_is_log_vocab():
    assert cross_entropy(torch.zeros(4, 50), torch.randint(0, 50, (4,))).item() == pytest.approx(math.log(50))


def test_cross_entropy_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="targets"):
        cross_entropy(torch.randn(4, 10), torch.zeros(5, dtype=torch.long))


def test_perplexity_is_exp_of_loss():
    assert perplexity(torch.tensor(math.log(42.0))) == pytest.approx(42.0)


@pytest.mark.parametrize("dim", [0, -1])
def test_softmax_and_cross_entropy_backward_pass_gradcheck(dim):
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: softmax(t, dim=dim), (x,))
    assert torch.autograd.gradcheck(lambda t: cross_entropy(t, torch.tensor([0, 5, 2, 2])), (x,))


def test_masked_softmax_matches_torch_on_the_masked_scores_and_their_gradient():
    x = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(4, 6) > 0.4
    mask[:, 0] = True
    weights = torch.randn(3, 4, 6, dtype=torch.float64)
    ours = masked_softmax(x, mask, dim=-1)
    expected = torch.softmax(x.masked_fill(~mask, float("-inf")), dim=-1)
    torch.testing.assert_close(ours, expected)
    (grad,) = torch.autograd.grad((ours * weights).sum(), x)
    (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)
    torch.testing.assert_close(grad, expected_grad)
