"""Causal depthwise 1-D convolution, written from scratch (no ``torch.nn.functional.conv1d``).

Mamba mixes each channel with its own last ``kernel_size`` inputs before the selective scan. Being depthwise, the
convolution is just ``kernel_size`` shifted multiply-adds over the sequence, which is what
:func:`causal_depthwise_conv1d` computes; being causal, output ``t`` sees inputs ``t - kernel_size + 1 .. t`` only
(positions before the start are zeros, or the tail of the previous chunk when a ``state`` is given).

For recurrent decoding, :func:`causal_depthwise_conv1d_step` consumes one token and a rolling state holding the
previous ``kernel_size - 1`` inputs per channel, so a token costs O(kernel_size) whatever the sequence length.

Weights are stored as ``(channels, kernel_size)``; tap ``j`` multiplies input ``t - (kernel_size - 1) + j``, i.e. the
same orientation as ``torch.nn.Conv1d(channels, channels, kernel_size, groups=channels).weight[:, 0, :]`` with
``kernel_size - 1`` zeros of left padding.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor, nn


def causal_depthwise_conv1d(
    x: Float[Tensor, "b d L"],
    weight: Float[Tensor, "d k"],
    bias: Float[Tensor, " d"] | None = None,
    state: Float[Tensor, "b d km1"] | None = None,
) -> Float[Tensor, "b d L"]:
    """``y[:, c, t] = bias[c] + sum_j weight[c, j] * x[:, c, t - (k - 1) + j]``, zeros (or ``state``) before t=0."""
    if x.ndim != 3 or weight.ndim != 2 or x.shape[1] != weight.shape[0]:
        raise ValueError(
            "expected x (batch, channels, length) and weight (channels, kernel_size) with matching channels, "
            f"got x {tuple(x.shape)} and weight {tuple(weight.shape)}"
        )
    k, length = weight.shape[1], x.shape[-1]
    if state is None:
        state = x.new_zeros(x.shape[0], x.shape[1], k - 1)
    elif state.shape != (x.shape[0], x.shape[1], k - 1):
        raise ValueError(f"conv state must be (batch, channels, kernel_size - 1), got {tuple(state.shape)}")
    padded = torch.cat([state.to(x.dtype), x], dim=-1)  # (b, d, k - 1 + L)
    y = padded[..., k - 1 :] * weight[:, k - 1 : k]  # the current input's tap
    for j in range(k - 1):
        y = y + padded[..., j : j + length] * weight[:, j : j + 1]
    if bias is not None:
        y = y + bias[:, None]
    return y


def conv_state_after(x: Float[Tensor, "b d L"], kernel_size: int, state: Tensor | None = None) -> Tensor:
    """The rolling state ``(b, d, kernel_size - 1)`` after consuming ``x``: its last inputs, zero-filled if short."""
    if state is None:
        state = x.new_zeros(x.shape[0], x.shape[1], kernel_size - 1)
    history = torch.cat([state.to(x.dtype), x], dim=-1)  # (b, d, k - 1 + L)
    return history[..., history.shape[-1] - (kernel_size - 1) :].clone()


def causal_depthwise_conv1d_step(
    x: Float[Tensor, "b d"],
    state: Float[Tensor, "b d km1"],
    weight: Float[Tensor, "d k"],
    bias: Float[Tensor, " d"] | None = None,
) -> tuple[Float[Tensor, "b d"], Float[Tensor, "b d km1"]]:
    """One decoding step: returns ``(y_t, new_state)``; the same as the full convolution's last position."""
    window = torch.cat([state.to(x.dtype), x[..., None]], dim=-1)  # (b, d, k)
    y = (window * weight).sum(dim=-1)
    if bias is not None:
        y = y + bias
    return y, window[..., 1:]


class CausalDepthwiseConv1d(nn.Module):
    """Per-channel causal convolution with bias; parameters ``weight (channels, kernel_size)`` and ``bias``.

    Initialised like ``torch.nn.Conv1d`` (uniform in +-1/sqrt(fan_in) with fan_in = kernel_size), which is what
    the Mamba reference uses for its conv.
    """

    def __init__(self, channels: int, kernel_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        if channels < 1 or kernel_size < 1:
            raise ValueError(f"channels and kernel_size must be >= 1, got {channels} and {kernel_size}")
        self.channels, self.kernel_size = channels, kernel_size
        bound = 1.0 / math.sqrt(kernel_size)
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(channels, kernel_size, **factory).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(channels, **factory).uniform_(-bound, bound)) if bias else None

    def forward(self, x: Float[Tensor, "b d L"], state: Tensor | None = None) -> Float[Tensor, "b d L"]:
        return causal_depthwise_conv1d(x, self.weight, self.bias, state)

    def step(self, x: Float[Tensor, "b d"], state: Float[Tensor, "b d km1"]) -> tuple[Tensor, Tensor]:
        return causal_depthwise_conv1d_step(x, state, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"
