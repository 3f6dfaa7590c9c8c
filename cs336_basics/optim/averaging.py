"""Weight averaging of checkpoints (a uniform average over the last few saved models, "checkpoint averaging").

Averaging the weights of nearby checkpoints late in training approximates a flatter point of the loss surface and
often lowers validation loss for free (Izmailov et al. 2018, Sanyal et al. 2023 "LAWA"). Floating-point tensors are
averaged (accumulated in float64, returned in their own dtype); anything else (integer buffers such as step counters,
booleans, non-tensor values) is taken from the last state dict, which is treated as the most recent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def average_state_dicts(state_dicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Uniform average of ``state_dicts`` (same keys and shapes); non-float entries come from the last one."""
    if len(state_dicts) == 0:
        raise ValueError("average_state_dicts needs at least one state dict, got an empty sequence")
    last = state_dicts[-1]
    for index, sd in enumerate(state_dicts):
        if sd.keys() != last.keys():
            differing = sorted(set(sd.keys()) ^ set(last.keys()))[:5]
            raise ValueError(f"state dict {index} has different keys from the last one (e.g. {differing})")
    averaged: dict[str, Any] = {}
    for key, value in last.items():
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            averaged[key] = value
            continue
        total = torch.zeros(value.shape, dtype=torch.float64, device=value.device)
        for index, sd in enumerate(state_dicts):
            tensor = sd[key]
            if not isinstance(tensor, torch.Tensor) or tensor.shape != value.shape:
                shape = getattr(tensor, "shape", type(tensor).__name__)
                raise ValueError(f"entry {key!r} of state dict {index} is {shape}, expected a tensor of {value.shape}")
            total += tensor.to(device=value.device, dtype=torch.float64)
        averaged[key] = (total / len(state_dicts)).to(value.dtype)
    return averaged
