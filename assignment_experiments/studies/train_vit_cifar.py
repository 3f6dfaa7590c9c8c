"""Command line: train the small ViT on CIFAR-10 with standard or mHC residuals and print test accuracy.

    uv run python -m assignment_experiments.studies.train_vit_cifar --data-dir data/cifar10 --residual mhc --steps 500

The data folder holds the CIFAR-10 binary files (see :mod:`.cifar10`; a missing folder gives the download URL).
Run both ``--residual standard`` and ``--residual mhc`` with the same ``--seed`` to compare them.
Exit code 2 means a usage / data error (one line on stderr).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from assignment_experiments.studies.cifar10 import load_cifar10, normalize_images
from cs336_basics.models.vit import ViTClassifier
from cs336_basics.nn.functional import cross_entropy
from cs336_basics.optim.adamw import AdamW
from cs336_basics.optim.schedules import apply_learning_rate, cosine_with_warmup


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.train_vit_cifar",
        description="Train a small ViT on CIFAR-10 (standard vs mHC residuals).",
    )
    parser.add_argument("--data-dir", required=True, help="folder with data_batch_{1..5}.bin and test_batch.bin")
    parser.add_argument("--residual", choices=("standard", "mhc"), default="standard", help="residual connection type")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="images per step")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule, 5%% warmup)")
    parser.add_argument("--d-model", type=int, default=64, help="transformer width")
    parser.add_argument("--layers", type=int, default=4, help="number of blocks")
    parser.add_argument("--heads", type=int, default=4, help="attention heads")
    parser.add_argument("--patch-size", type=int, default=4, help="patch side in pixels (divides 32)")
    parser.add_argument("--hc-expansion", type=int, default=4, help="residual streams for --residual mhc")
    parser.add_argument("--eval-size", type=int, default=2000, help="test images used for the accuracy (0 = all)")
    parser.add_argument("--log-every", type=int, default=50, help="print the training loss every N steps")
    parser.add_argument("--seed", type=int, default=0, help="seed for init and batch order")
    return parser.parse_args(argv)


@torch.no_grad()
def accuracy(model: ViTClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Fraction of ``images`` (normalised float) classified as ``labels``."""
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(-1) == labels[start : start + batch_size]).sum())
    model.train()
    return correct / max(1, len(images))


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    try:
        train_x, train_y = load_cifar10(args.data_dir, "train")
        test_x, test_y = load_cifar10(args.data_dir, "test")
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    if args.eval_size:
        test_x, test_y = test_x[: args.eval_size], test_y[: args.eval_size]
    train_y, test_images, test_labels = torch.as_tensor(train_y), normalize_images(test_x), torch.as_tensor(test_y)

    torch.manual_seed(args.seed)
    model = ViTClassifier(
        patch_size=args.patch_size,
        d_model=args.d_model,
        num_layers=args.layers,
        num_heads=args.heads,
        residual=args.residual,
        hc_expansion=args.hc_expansion,
    )
    optimizer = AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    generator = torch.Generator().manual_seed(args.seed)
    warmup = max(1, args.steps // 20)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        lr = cosine_with_warmup(step, args.lr, args.lr / 10, warmup, args.steps)
        apply_learning_rate(optimizer, lr)
        idx = torch.randint(0, len(train_y), (args.batch_size,), generator=generator)
        images = normalize_images(train_x[idx.numpy()])
        flip = torch.rand(args.batch_size, generator=generator) < 0.5  # random horizontal flips
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
        loss = cross_entropy(model(images), train_y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.log_every == 0 or step == args.steps:
            print(f"step {step:5d}  loss {loss.item():.4f}  lr {lr:.2e}  {time.perf_counter() - started:.1f}s")
    result = {
        "residual": args.residual,
        "steps": args.steps,
        "test_accuracy": accuracy(model, test_images, test_labels),
    }
    print(f"test accuracy ({args.residual}, {len(test_labels)} images): {result['test_accuracy']:.4f}")
    return result


if __name__ == "__main__":
    main()
