"""Checks every language-model test module runs the same way (imported by the tests, not collected)."""

import torch

from cs336_basics.nn.functional import cross_entropy
from cs336_basics.optim.adamw import AdamW


def successor_task_losses(model: torch.nn.Module, steps: int = 25) -> list[float]:
    """Training losses of ``steps`` AdamW steps on next token = token + 1 (mod 20), auxiliary losses included."""
    optimizer = AdamW(model.parameters(), lr=2e-2, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        seq = (torch.randint(0, 20, (8, 1), generator=generator) + torch.arange(13)) % 20
        loss = cross_entropy(model(seq[:, :-1]), seq[:, 1:]) + model.auxiliary_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def greedy_by_recompute(model: torch.nn.Module, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation computed the slow way (the whole prefix every step), the oracle for cached decoding."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]
