"""Random language-modelling batches from one long token array (in memory or a ``np.memmap``).

A batch is ``batch_size`` windows of ``context_length + 1`` consecutive tokens whose start index is drawn uniformly
from all ``len(dataset) - context_length`` valid starts; inputs are the first ``context_length`` tokens of each
window and targets the same window shifted by one. Only the sampled windows are read, so a memmapped corpus larger
than memory works (fancy indexing a memmap touches just those pages).

Randomness comes from ``generator`` when given (a ``numpy.random.Generator`` or a ``torch.Generator``, whichever the
caller checkpoints), so a run can save and restore its data position; otherwise from NumPy's global RNG (seedable
with ``np.random.seed``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and check it exists here; raises ``RuntimeError`` naming the device and the fix otherwise."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise RuntimeError(f"invalid device {device!r} ({error}); use e.g. 'cpu', 'cuda', 'cuda:0' or 'mps'") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available here; use device='cpu'")
        index = resolved.index if resolved.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {device!r} does not exist: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"device {device!r} requested but MPS is not available here; use device='cpu'")
    return resolved


def get_batch(
    dataset: npt.NDArray,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    generator: np.random.Generator | torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``(inputs, targets)``, both int64 ``(batch_size, context_length)`` on ``device``.

    ``targets[b, i] == dataset[start_b + i + 1]`` where ``inputs[b, i] == dataset[start_b + i]``.
    """
    target_device = resolve_device(device)
    if not isinstance(dataset, np.ndarray) or dataset.ndim != 1:
        raise ValueError(
            f"dataset must be a 1-D numpy array or np.memmap of token ids, got {type(dataset).__name__} "
            f"with shape {getattr(dataset, 'shape', None)}"
        )
    if not np.issubdtype(dataset.dtype, np.integer):
        raise ValueError(f"dataset must hold integer token ids, got dtype {dataset.dtype}")
    if batch_size < 1 or context_length < 1:
        raise ValueError(f"batch_size and context_length must be >= 1, got {batch_size} and {context_length}")
    num_starts = len(dataset) - context_length
    if num_starts < 1:
        raise ValueError(
            f"dataset has {len(dataset)} tokens, too short for context_length={context_length} "
            f"(needs at least {context_length + 1}); use a smaller context or more data"
        )
    if generator is None:
        starts = np.random.randint(0, num_starts, size=batch_size)
    elif isinstance(generator, torch.Generator):
        starts = torch.randint(0, num_starts, (batch_size,), generator=generator, device=generator.device).cpu().numpy()
    elif isinstance(generator, np.random.Generator):
        starts = generator.integers(0, num_starts, size=batch_size)
    else:
        raise ValueError(f"generator must be a numpy.random.Generator or torch.Generator, got {type(generator)}")
    offsets = np.arange(context_length + 1)
    windows = np.asarray(dataset[starts[:, None] + offsets[None, :]], dtype=np.int64)  # (B, T + 1)
    # Separate contiguous copies, so callers may ``.view`` them (e.g. flattening targets for the loss).
    inputs = torch.from_numpy(np.ascontiguousarray(windows[:, :-1]))
    targets = torch.from_numpy(np.ascontiguousarray(windows[:, 1:]))
    if target_device.type == "cuda":
        # Pinned host memory lets the copy overlap with compute.
        return (
            inputs.pin_memory().to(target_device, non_blocking=True),
            targets.pin_memory().to(target_device, non_blocking=True),
        )
    return inputs.to(target_device), targets.to(target_device)
