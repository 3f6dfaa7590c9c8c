"""CIFAR-10 from its binary distribution in a local folder, for the ViT study (:mod:`.train_vit_cifar`).

The binary release (https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz) unpacks to ``cifar-10-batches-bin/``
holding ``data_batch_1.bin`` .. ``data_batch_5.bin`` (training, 10000 records each) and ``test_batch.bin``. Every
record is 3073 bytes: one label byte (0-9), then 1024 red, 1024 green and 1024 blue pixel bytes, each plane in
row-major order, so a record reshapes directly to ``(3, 32, 32)``. Nothing is downloaded here (offline first): a
missing file raises an error naming the folder and the download URL.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
SPLIT_FILES = {"train": [f"data_batch_{i}.bin" for i in range(1, 6)], "test": ["test_batch.bin"]}
IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32
# Per-channel statistics of the CIFAR-10 training set, for input normalisation.
CHANNEL_MEAN = (0.4914, 0.4822, 0.4465)
CHANNEL_STD = (0.2470, 0.2435, 0.2616)


def _resolve_folder(data_dir: str | Path, names: list[str]) -> Path:
    """``data_dir`` itself or its ``cifar-10-batches-bin`` subfolder, whichever holds the files."""
    root = Path(data_dir)
    for folder in (root, root / "cifar-10-batches-bin"):
        if all((folder / name).is_file() for name in names):
            return folder
    missing = [name for name in names if not (root / name).is_file()]
    raise FileNotFoundError(
        f"CIFAR-10 binary files {missing} not found in {root} (or {root / 'cifar-10-batches-bin'}); "
        f"download and unpack {CIFAR10_URL} into that folder"
    )


def load_cifar10(data_dir: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 of ``split`` ("train" or "test")."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    folder = _resolve_folder(data_dir, SPLIT_FILES[split])
    images, labels = [], []
    for name in SPLIT_FILES[split]:
        raw = np.fromfile(folder / name, dtype=np.uint8)
        if raw.size % RECORD_BYTES:
            raise ValueError(f"{folder / name} has {raw.size} bytes, not a multiple of the {RECORD_BYTES}-byte record")
        records = raw.reshape(-1, RECORD_BYTES)
        if records[:, 0].max(initial=0) > 9:
            raise ValueError(f"{folder / name} has labels above 9; is it the CIFAR-10 (not CIFAR-100) binary file?")
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, *IMAGE_SHAPE))
    return np.concatenate(images), np.concatenate(labels)


def normalize_images(images: np.ndarray | Tensor) -> Tensor:
    """uint8 ``(N, 3, 32, 32)`` -> float32, scaled to [0, 1] and standardised per channel."""
    x = torch.as_tensor(images).float() / 255.0
    mean = torch.tensor(CHANNEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CHANNEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std
