"""Specification of the ViT classifier, the CIFAR-10 binary loader and the CIFAR training CLI."""

import io
from pathlib import Path

import numpy as np
import pytest
import torch

from assignment_experiments.studies.cifar10 import (
    CIFAR10_URL,
    IMAGE_SHAPE,
    RECORD_BYTES,
    SPLIT_FILES,
    load_cifar10,
    normalize_images,
)
from assignment_experiments.studies.train_vit_cifar import main as train_vit_main
from cs336_basics.models.vit import ViTClassifier, patchify
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.optim.adamw import AdamW

SMALL = {"image_size": 8, "patch_size": 4, "d_model": 16, "num_layers": 2, "num_heads": 2, "d_ff": 32}


def write_fake_cifar10(data_dir: str | Path, records_per_file: int = 20, seed: int = 0) -> Path:
    """Write all six CIFAR-10 binary files with random records (for tests and smoke runs); return the folder.

    Images are noise plus a per-class colour offset, so a classifier can learn them.
    """
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in SPLIT_FILES["train"] + SPLIT_FILES["test"]:
        labels = rng.integers(0, 10, size=records_per_file, dtype=np.uint8)
        pixels = rng.integers(0, 96, size=(records_per_file, *IMAGE_SHAPE))
        offset = (labels[:, None] * np.array([25, 13, 7])[None, :]) % 160  # (N, 3): class colour
        pixels = (pixels + offset[:, :, None, None]).astype(np.uint8)
        records = np.concatenate([labels[:, None], pixels.reshape(records_per_file, -1)], axis=1)
        records.astype(np.uint8).tofile(folder / name)
    return folder


def test_loader_reads_records_as_label_then_channel_planes(tmp_path):
    rng = np.random.default_rng(0)
    for i, name in enumerate([f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]):
        records = rng.integers(0, 256, size=(2, RECORD_BYTES), dtype=np.uint8)
        records[:, 0] = [i % 10, (i + 3) % 10]
        records.tofile(tmp_path / name)
        if name == "test_batch.bin":
            expected = records
    images, labels = load_cifar10(tmp_path, "test")
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == expected[:, 0].tolist()
    assert images[1, 2, 0, 5] == expected[1, 1 + 2 * 1024 + 5]  # blue plane, row 0, column 5
    assert images[0, 0, 3, 1] == expected[0, 1 + 3 * 32 + 1]  # red plane, row 3, column 1
    assert load_cifar10(tmp_path, "train")[0].shape == (10, 3, 32, 32)


def test_loader_finds_the_unpacked_subfolder(tmp_path):
    write_fake_cifar10(tmp_path / "cifar-10-batches-bin", records_per_file=3)
    assert load_cifar10(tmp_path, "train")[1].shape == (15,)


def test_missing_data_names_the_folder_and_download_url(tmp_path):
    with pytest.raises(FileNotFoundError, match=CIFAR10_URL) as info:
        load_cifar10(tmp_path / "nowhere", "train")
    assert "nowhere" in str(info.value)


def test_truncated_file_is_value_error(tmp_path):
    write_fake_cifar10(tmp_path, records_per_file=2)
    with open(tmp_path / "test_batch.bin", "ab") as f:
        f.write(b"\x00")
    with pytest.raises(ValueError, match="multiple"):
        load_cifar10(tmp_path, "test")


def test_patchify_matches_torch_unfold():
    images = torch.randn(2, 3, 8, 8)
    expected = torch.nn.functional.unfold(images, kernel_size=4, stride=4).transpose(1, 2)  # (B, N, C*p*p)
    torch.testing.assert_close(patchify(images, 4), expected)


@pytest.mark.parametrize("residual", ["standard", "mhc"])
def test_classifier_returns_class_logits_per_image(residual):
    model = ViTClassifier(**SMALL, residual=residual, hc_expansion=2)
    logits = model(torch.randn(3, 3, 8, 8))
    assert logits.shape == (3, 10)


def test_mhc_vit_starts_close_to_the_standard_one_with_the_same_weights():
    torch.manual_seed(0)
    standard = ViTClassifier(**SMALL)
    torch.manual_seed(0)
    mhc = ViTClassifier(**SMALL, residual="mhc", hc_expansion=3)
    mhc.load_state_dict(standard.state_dict(), strict=False)
    images = torch.randn(4, 3, 8, 8)
    torch.testing.assert_close(mhc(images), standard(images), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("residual", ["standard", "mhc"])
def test_loss_falls_on_colour_coded_images(residual):
    model = ViTClassifier(**SMALL, residual=residual, hc_expansion=2)
    optimizer = AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(20):
        labels = torch.randint(0, 10, (16,), generator=generator)
        images = torch.randn(16, 3, 8, 8, generator=generator) * 0.3 + (labels.float() / 5 - 1).view(-1, 1, 1, 1)
        loss = cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_state_dict_round_trip_gives_identical_logits():
    model = ViTClassifier(**SMALL, residual="mhc", hc_expansion=2)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = ViTClassifier(**SMALL, residual="mhc", hc_expansion=2)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    images = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(fresh(images), model(images), rtol=0, atol=0)


def test_normalize_images_standardises_channels():
    out = normalize_images(np.full((1, 3, 2, 2), 255, dtype=np.uint8))
    torch.testing.assert_close(out[0, 0, 0, 0], torch.tensor((1 - 0.4914) / 0.2470))


def test_training_cli_runs_on_fake_cifar_and_prints_accuracy(tmp_path, capsys):
    write_fake_cifar10(tmp_path, records_per_file=8)
    argv = ["--data-dir", str(tmp_path), "--residual", "mhc", "--steps", "3", "--batch-size", "4"]
    result = train_vit_main(argv + ["--d-model", "16", "--layers", "1", "--heads", "2", "--patch-size", "8"])
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert "test accuracy (mhc" in capsys.readouterr().out


def test_training_cli_missing_data_exits_with_code_2(tmp_path):
    with pytest.raises(SystemExit) as info:
        train_vit_main(["--data-dir", str(tmp_path), "--steps", "1"])
    assert info.value.code == 2
