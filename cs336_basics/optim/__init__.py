"""Optimization toolkit: AdamW, learning-rate schedules, gradient clipping and checkpoint weight averaging."""

from cs336_basics.optim.adamw import AdamW
from cs336_basics.optim.averaging import average_state_dicts
from cs336_basics.optim.clipping import clip_gradients, global_grad_norm
from cs336_basics.optim.schedules import apply_learning_rate, cosine_with_warmup, warmup_stable_decay

__all__ = [
    "AdamW",
    "apply_learning_rate",
    "average_state_dicts",
    "clip_gradients",
    "cosine_with_warmup",
    "global_grad_norm",
    "warmup_stable_decay",
]
