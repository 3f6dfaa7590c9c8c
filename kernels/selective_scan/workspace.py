"""Scratch buffers reused across calls of the chunked scan, so its large temporaries cost no page faults.

The chunked scan needs a few ``(T, b, nc, d, n)`` buffers -- one value per token, channel and state -- that live
only for the duration of one forward or one backward call. Allocated fresh every call, each is a large ``malloc``
that glibc serves with ``mmap`` and returns to the operating system on ``free``, so every call pays a page fault
(and the kernel's zeroing) for every 4 KiB touched: measured at about 1.8 ms per 8 MiB, comparable to the arithmetic
done in the buffer. Keeping the buffers between calls pays that once.

Rules that make reuse safe: a buffer is used only inside one forward or backward call, nothing returned or saved
for backward ever aliases it (callers copy results out), and each thread has its own set (autograd runs a CPU
backward on the calling thread). Buffers grow to the largest request seen; requests above ``MAX_BYTES`` are
allocated per call instead, so one huge call does not pin its memory for the rest of the process.
``release()`` drops them all. Only CPU tensors are cached; CUDA has PyTorch's caching allocator already.
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

__all__ = ["MAX_BYTES", "cached_bytes", "release", "scratch"]

MAX_BYTES = 1 << 30  # largest single buffer kept between calls (1 GiB)


class _Buffers(threading.local):
    def __init__(self) -> None:
        self.by_slot: dict[tuple[int, torch.dtype], Tensor] = {}


_local = _Buffers()


def scratch(slot: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised ``shape`` tensor of ``like``'s dtype and device; on CPU, slot ``slot``'s reused buffer."""
    numel = math.prod(shape)
    if like.device.type != "cpu" or numel * like.element_size() > MAX_BYTES or torch.is_inference_mode_enabled():
        return like.new_empty(shape)
    key = (slot, like.dtype)
    buffer = _local.by_slot.get(key)
    if buffer is None or buffer.numel() < numel:
        _local.by_slot.pop(key, None)  # free the smaller one first, so both are never held at once
        buffer = like.new_empty(numel)
        _local.by_slot[key] = buffer
    return buffer[:numel].view(shape)


def cached_bytes() -> int:
    """Bytes held by this thread's scratch buffers."""
    return sum(b.numel() * b.element_size() for b in _local.by_slot.values())


def release() -> None:
    """Free this thread's scratch buffers (they are re-created on the next call)."""
    _local.by_slot.clear()
