"""Specification of the from-scratch causal depthwise convolution (cs336_basics/nn/conv.py).

Oracle: ``torch.nn.functional.conv1d`` with ``groups=channels`` and ``kernel_size - 1`` zeros of left padding.
"""

import pytest
import torch
import torch.nn.functional as F

from cs336_basics.nn.conv import (
    CausalDepthwiseConv1d,
    causal_depthwise_conv1d,
    causal_depthwise_conv1d_step,
    conv_state_after,
)


def _oracle(x, weight, bias):
    k = weight.shape[1]
    return F.conv1d(F.pad(x, (k - 1, 0)), weight[:, None, :], bias, groups=x.shape[1])


@pytest.mark.parametrize("kernel_size", [1, 2, 4])
@pytest.mark.parametrize("length", [1, 3, 17])
def test_conv_matches_torch_conv1d_with_left_padding(kernel_size, length):
    x, weight, bias = torch.randn(2, 5, length), torch.randn(5, kernel_size), torch.randn(5)
    torch.testing.assert_close(causal_depthwise_conv1d(x, weight, bias), _oracle(x, weight, bias))


def test_conv_gradients_match_torch_conv1d():
    x, weight, bias = (torch.randn(*s, requires_grad=True) for s in [(2, 3, 9), (3, 4), (3,)])
    causal_depthwise_conv1d(x, weight, bias).square().sum().backward()
    ours = [t.grad.clone() for t in (x, weight, bias)]
    for t in (x, weight, bias):
        t.grad = None
    _oracle(x, weight, bias).square().sum().backward()
    for g, t in zip(ours, (x, weight, bias), strict=True):
        torch.testing.assert_close(g, t.grad)


def test_conv_is_causal():
    x, weight = torch.randn(1, 3, 10), torch.randn(3, 4)
    y = causal_depthwise_conv1d(x, weight)
    x2 = x.clone()
    x2[..., 6:] += 1.0
    y2 = causal_depthwise_conv1d(x2, weight)
    torch.testing.assert_close(y[..., :6], y2[..., :6])
    assert not torch.allclose(y[..., 6:], y2[..., 6:])


def test_conv_with_state_continues_a_split_sequence():
    x, weight, bias = torch.randn(2, 3, 11), torch.randn(3, 4), torch.randn(3)
    full = causal_depthwise_conv1d(x, weight, bias)
    first = causal_depthwise_conv1d(x[..., :2], weight, bias)
    state = conv_state_after(x[..., :2], kernel_size=4)
    second = causal_depthwise_conv1d(x[..., 2:], weight, bias, state=state)
    torch.testing.assert_close(torch.cat([first, second], dim=-1), full)


def test_conv_steps_equal_full_convolution():
    x, weight, bias = torch.randn(2, 3, 7), torch.randn(3, 4), torch.randn(3)
    full = causal_depthwise_conv1d(x, weight, bias)
    state = torch.zeros(2, 3, 3)
    outs = []
    for t in range(7):
        y, state = causal_depthwise_conv1d_step(x[..., t], state, weight, bias)
        outs.append(y)
    torch.testing.assert_close(torch.stack(outs, dim=-1), full)
    torch.testing.assert_close(state, x[..., -3:])


def test_conv_module_init_matches_torch_conv1d_bounds():
    conv = CausalDepthwiseConv1d(64, 4)
    assert conv.weight.shape == (64, 4) and conv.bias.shape == (64,)
    assert conv.weight.abs().max() <= 0.5 and conv.weight.abs().max() > 0.4  # bound 1/sqrt(4)


def test_conv_rejects_mismatched_channels():
    with pytest.raises(ValueError, match="matching channels"):
        causal_depthwise_conv1d(torch.randn(1, 3, 5), torch.randn(4, 2))
