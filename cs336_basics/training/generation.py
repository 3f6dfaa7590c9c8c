"""Autoregressive decoding for any :class:`~cs336_basics.models.base.LanguageModel`.

``generate`` samples continuations of one or many prompts:

- temperature 0 is greedy decoding; otherwise logits are divided by the temperature and, with ``top_p < 1``,
  sampling is restricted to the smallest set of tokens whose probability mass reaches ``top_p`` (nucleus sampling);
- a row stops at ``eos_id`` (the end-of-text token is kept as its last token) or after ``max_new_tokens``;
- ``seed`` makes sampling deterministic (a private ``torch.Generator``; the global RNG is untouched);
- ``on_token(row, token)``, when given, is called for every new token as soon as it is sampled (streaming output).

Batched prompts of different lengths need no padding: all rows advance one position per step in lockstep, a row
still inside its prompt is fed its next prompt token (teacher forcing), and a row past it is fed its last sample.
The shared shortest-prompt prefix is prefilled in one call. Each row therefore sees exactly its own prefix, for
attention caches and recurrent states alike.

When the model implements ``make_cache``, each step feeds only the new position (KV cache / recurrent state). Models
without it, and sequences grown past the model's ``context_length``, fall back to recomputing the prefix, cropped to
the last ``context_length`` tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from cs336_basics.nn.functional import softmax


def sample_next_token(
    logits: Float[Tensor, " b vocab"],
    temperature: float = 1.0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Int[Tensor, " b"]:
    """One token per row: argmax at temperature 0, else a (nucleus-restricted) sample from ``softmax(logits / T)``."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = softmax(logits.float() / temperature, dim=-1)  # (B, V)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of strictly more likely tokens
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the top token always survives
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _validate(prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float) -> None:
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate needs at least one prompt and every prompt needs at least one token")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _make_cache(model: Any, batch_size: int, max_seq_len: int) -> tuple[Any | None, int]:
    """The model's decoding cache (None when it has none) and how many positions it may hold."""
    limit = getattr(model, "context_length", None)
    capacity = min(max_seq_len, limit) if limit is not None else max_seq_len
    make_cache = getattr(model, "make_cache", None)
    try:
        return (make_cache(batch_size, capacity), capacity) if make_cache is not None else (None, 0)
    except NotImplementedError:
        return None, 0


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[Sequence[int]] | Sequence[int] | Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    seed: int | None = None,
    on_token: Callable[[int, int], None] | None = None,
) -> list[list[int]] | list[int]:
    """Continue each prompt; returns the new tokens per prompt (a flat list for a single flat prompt)."""
    single = isinstance(prompt_ids, Tensor) and prompt_ids.ndim == 1
    single = single or (len(prompt_ids) > 0 and isinstance(prompt_ids[0], int | np.integer))
    prompts = [list(map(int, prompt_ids))] if single else [list(map(int, p)) for p in prompt_ids]
    _validate(prompts, max_new_tokens, temperature, top_p)

    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    lengths = [len(p) for p in prompts]
    B, start, total = len(prompts), min(lengths), max(lengths) + max_new_tokens
    limit = getattr(model, "context_length", None)
    tokens = torch.zeros(B, total, dtype=torch.long, device=device)  # (B, total): prompts, then samples
    for b, prompt in enumerate(prompts):
        tokens[b, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
    prompt_len = torch.tensor(lengths, device=device)  # (B,)
    new_tokens: list[list[int]] = [[] for _ in prompts]
    done = [max_new_tokens == 0] * B

    was_training = model.training
    model.eval()
    cache, capacity = _make_cache(model, B, total) if max_new_tokens > 0 else (None, 0)
    fed = 0  # positions of `tokens` the cache has consumed
    for pos in range(start, total):  # predict the token at position `pos` for every row
        if all(done):
            break
        if cache is not None and pos <= capacity:
            logits = model(tokens[:, fed:pos], cache=cache)[:, -1]  # (B, V): only the unseen positions
            fed = pos
        else:
            cache = None
            window = tokens[:, max(0, pos - limit) : pos] if limit is not None else tokens[:, :pos]
            logits = model(window)[:, -1]  # (B, V): recompute the (cropped) prefix
        sampled = sample_next_token(logits, temperature, top_p, generator)  # (B,)
        in_prompt = pos < prompt_len  # (B,): rows still reading their prompt keep the prompt token
        tokens[:, pos] = torch.where(in_prompt, tokens[:, pos], sampled)
        for b in range(B):
            if done[b] or pos < lengths[b]:
                continue
            token = int(sampled[b])
            new_tokens[b].append(token)
            if on_token is not None:
                on_token(b, token)
            done[b] = len(new_tokens[b]) >= max_new_tokens or token == eos_id
    model.train(was_training)
    return new_tokens[0] if single else new_tokens
