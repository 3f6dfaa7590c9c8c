"""Large buffers of the chunked scan that are reused across calls instead of allocated fresh every call.

The chunked scan needs a few ``(T, b, nc, d, n)`` buffers -- one value per token, channel and state. Allocated
fresh every call, each is a large ``malloc`` that glibc serves with ``mmap`` (or trims back to the operating system
on ``free``), so every call pays a page fault and the kernel's zeroing for every 4 KiB it touches -- measured at
about 1.8 ms per 8 MiB, as much as the arithmetic done in the buffer. Two kinds of reuse avoid that:

- **Scratch** (:func:`scratch`): buffers used only inside one forward or one backward call. Nothing returned or
  saved for backward aliases them, and each thread has its own set (autograd runs a CPU backward on the thread that
  calls it), so one buffer per slot serves every call of every layer.
- **Leases** (:func:`lease`): buffers a forward keeps for its backward (the decays and states). They come from a
  shared free list and go back to it when the backward has used them (:func:`give_back`), or when the autograd
  graph is freed without a backward (the caller ties :func:`give_back` to the graph node's lifetime). A lease is
  single-use: the backward that claims it turns it inactive first, so a second backward over a retained graph
  finds it inactive and must recompute instead of reading buffers that another call may own by then.

Buffers grow to the largest request seen. A request above ``MAX_BYTES`` is allocated for the call alone, and the
free list keeps at most ``POOL_MAX_BYTES``, so one huge call does not pin its memory for the rest of the process;
``release()`` drops everything. Only CPU tensors are reused (CUDA has PyTorch's caching allocator already).
"""

from __future__ import annotations

import math
import threading

import torch
from torch import Tensor

__all__ = ["MAX_BYTES", "POOL_MAX_BYTES", "Lease", "cached_bytes", "give_back", "lease", "release", "scratch"]

MAX_BYTES = 1 << 30  # largest single buffer reused between calls (1 GiB)
POOL_MAX_BYTES = 1 << 30  # most bytes the free list of leased buffers keeps (1 GiB)


class _Scratch(threading.local):
    def __init__(self) -> None:
        self.by_slot: dict[tuple[int, torch.dtype], Tensor] = {}


_scratch = _Scratch()
_pool_lock = threading.Lock()
_pool: list[Tensor] = []  # flat CPU buffers not leased to anyone


def _reusable(like: Tensor, numel: int) -> bool:
    # Not under inference mode: a buffer made there is an inference tensor, which later in-place writes reject.
    cpu = like.device.type == "cpu" and not torch.is_inference_mode_enabled()
    return cpu and numel * like.element_size() <= MAX_BYTES


def scratch(slot: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """An uninitialised ``shape`` tensor of ``like``'s dtype and device; on CPU, slot ``slot``'s reused buffer."""
    numel = math.prod(shape)
    if not _reusable(like, numel):
        return like.new_empty(shape)
    key = (slot, like.dtype)
    buffer = _scratch.by_slot.get(key)
    if buffer is None or buffer.numel() < numel:
        _scratch.by_slot.pop(key, None)  # free the smaller one first, so both are never held at once
        buffer = like.new_empty(numel)
        _scratch.by_slot[key] = buffer
    return buffer[:numel].view(shape)


class Lease:
    """Buffers a forward keeps for its backward; ``active`` until claimed by that backward or given back."""

    __slots__ = ("__weakref__", "active", "flat", "views")

    def __init__(self, flat: list[Tensor], views: list[Tensor]) -> None:
        self.flat, self.views, self.active = flat, views, True

    def claim(self) -> list[Tensor] | None:
        """The leased views for the one backward that may use them, or None if already claimed or given back."""
        if not self.active:
            return None
        self.active = False
        return self.views


def lease(shapes: list[tuple[int, ...]], like: Tensor) -> Lease:
    """Uninitialised tensors of ``shapes`` (``like``'s dtype and device), reused from the free list where possible."""
    flat: list[Tensor] = []
    with _pool_lock:
        for shape in shapes:
            numel = math.prod(shape)
            fits = [i for i, b in enumerate(_pool) if b.dtype == like.dtype and b.numel() >= numel]
            if _reusable(like, numel) and fits:
                flat.append(_pool.pop(min(fits, key=lambda i: _pool[i].numel())))
            else:
                flat.append(like.new_empty(numel))
    return Lease(flat, [b[: math.prod(s)].view(s) for b, s in zip(flat, shapes, strict=True)])


def give_back(held: Lease) -> None:
    """Return a lease's buffers to the free list (its backward is done, or its graph was freed); later calls no-op."""
    if not held.flat:
        return
    held.active = False
    flat, held.flat, held.views = held.flat, [], []
    with _pool_lock:
        for buffer in flat:
            if _reusable(buffer, buffer.numel()):
                _pool.append(buffer)
        while sum(b.numel() * b.element_size() for b in _pool) > POOL_MAX_BYTES:
            _pool.pop(max(range(len(_pool)), key=lambda i: _pool[i].numel()))


def cached_bytes() -> int:
    """Bytes held between calls: this thread's scratch buffers and the free list of leased buffers."""
    with _pool_lock:
        pooled = sum(b.numel() * b.element_size() for b in _pool)
    return pooled + sum(b.numel() * b.element_size() for b in _scratch.by_slot.values())


def release() -> None:
    """Free this thread's scratch buffers and the free list (both are re-created on demand)."""
    _scratch.by_slot.clear()
    with _pool_lock:
        _pool.clear()
