"""Evaluate finished Transformer runs beyond their training length (RoPE vs learned absolute positions vs NoPE).

    uv run python -m assignment_experiments.studies.eval_length_generalization runs/lengen_rope runs/lengen_learned \
        --factor 2 --out-dir results/studies/length_generalization

For each run: read ``config.json`` and the newest checkpoint, rebuild the model with ``context_length`` multiplied
by ``--factor`` and copy the trained weights into it. RoPE tables are recomputed for the longer length (they are
non-persistent buffers); a learned ``position_embeddings`` table gets its trained rows copied and the new rows keep
their initialisation (seeded with the run's seed), i.e. the model has never seen them. Then the validation split is
cut into non-overlapping windows of the training length (1x) and of ``factor`` times it, and the per-position
cross-entropy is averaged over windows and reported in position buckets. Writes ``length_generalization.json``,
``length_generalization.md`` and ``length_generalization.png`` under ``--out-dir``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from assignment_experiments.data_sources import prepare_data
from assignment_experiments.run_loading import (
    build_run_model,
    load_run_tokenizer,
    read_run_checkpoint,
    read_run_config,
    run_vocab_size,
)
from assignment_experiments.studies.rescoring import parse_rescoring_args, rescoring_parser
from cs336_basics.data.windows import iter_eval_batches


def load_extended(run_dir: Path, factor: int) -> tuple[torch.nn.Module, Any, int, int]:
    """The run's trained model rebuilt at ``factor`` x its context, its prepared data, train length and step."""
    train_len = read_run_config(run_dir).model.context_length
    config = read_run_config(run_dir, {"model": {"context_length": train_len * factor}})
    torch.manual_seed(config.train.seed)
    data = prepare_data(config.data, train_len * factor, torch.device("cpu"), seed=config.train.seed)
    model = build_run_model(config, run_vocab_size(config, load_run_tokenizer(run_dir), data.vocab_size))
    _, payload = read_run_checkpoint(run_dir, "latest")
    saved, target = payload["model"], model.state_dict()
    missing = sorted(set(target) - set(saved))
    unexpected = sorted(set(saved) - set(target))
    if missing or unexpected:
        raise ValueError(f"{run_dir}: checkpoint keys do not match the rebuilt model: {missing=} {unexpected=}")
    with torch.no_grad():
        for key, value in saved.items():
            if target[key].shape == value.shape:
                target[key].copy_(value)
            elif key.endswith("position_embeddings.weight") and target[key].shape[1:] == value.shape[1:]:
                target[key][: value.shape[0]].copy_(value)  # trained rows; the rest stay at their init
            else:
                raise ValueError(f"{run_dir}: {key} has shape {tuple(value.shape)}, model {tuple(target[key].shape)}")
    model.load_state_dict(target)
    model.eval()
    return model, data, train_len, payload["iteration"]


@torch.no_grad()
def per_position_loss(model: torch.nn.Module, val: np.ndarray, length: int, max_tokens: int, batch: int) -> np.ndarray:
    """Mean cross-entropy at each of ``length`` positions over non-overlapping validation windows.

    The windows tile the first ``max_tokens`` validation tokens, so every length scores the same tokens.
    """
    if max_tokens < length:
        raise ValueError(f"--max-tokens {max_tokens} is shorter than one window of {length} tokens; raise it")
    total, count = torch.zeros(length, dtype=torch.float64), 0
    for inputs, targets in iter_eval_batches(val, length, batch, max_tokens):
        logits = model(inputs).float()  # (b, T, V)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (b, T)
        total += loss.sum(0).double()
        count += len(inputs)
    return (total / count).numpy()


def buckets(losses: np.ndarray, size: int) -> list[float]:
    return [float(losses[i : i + size].mean()) for i in range(0, len(losses), size)]


def main(argv: list[str] | None = None) -> int:
    parser = rescoring_parser("eval_length_generalization", "finished run directories (Transformer runs)")
    parser.add_argument("--factor", type=int, default=2, help="evaluate at this multiple of the training length")
    parser.add_argument("--bucket", type=int, default=32, help="positions per reported bucket")
    args = parse_rescoring_args(parser, argv)
    results: dict[str, Any] = {}
    for run_dir in args.runs:
        model, data, train_len, step = load_extended(run_dir, args.factor)
        val = data.batches.val
        entry: dict[str, Any] = {
            "train_length": train_len,
            "checkpoint_step": step,
            "positions": read_run_config(run_dir).model.attention.positions,
        }
        for mult in (1, args.factor):
            length = train_len * mult
            losses = per_position_loss(model, val, length, args.max_tokens, args.batch)
            entry[f"{mult}x"] = {
                "length": length,
                "mean_loss": float(losses.mean()),
                "mean_loss_first_half_positions": float(losses[:train_len].mean()),
                "mean_loss_beyond_train_length": float(losses[train_len:].mean()) if mult > 1 else None,
                "bucket_size": args.bucket,
                "bucket_losses": buckets(losses, args.bucket),
                "per_position": [float(x) for x in losses],
            }
        results[run_dir.name] = entry
        print(
            f"{run_dir.name}: "
            + ", ".join(f"{k} mean {v['mean_loss']:.4f}" for k, v in entry.items() if isinstance(v, dict)),
            flush=True,
        )
    (args.out_dir / "length_generalization.json").write_text(json.dumps(results, indent=2) + "\n")
    fx = f"{args.factor}x"
    header = [
        "run",
        "positions",
        "ckpt step",
        "loss @1x (pos 0-L)",
        f"loss @{fx} (all)",
        f"@{fx} pos < L",
        f"@{fx} pos >= L",
        f"ppl @{fx} pos >= L",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, e in results.items():
        beyond = e[fx]["mean_loss_beyond_train_length"]
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    e["positions"],
                    str(e["checkpoint_step"]),
                    f"{e['1x']['mean_loss']:.4f}",
                    f"{e[fx]['mean_loss']:.4f}",
                    f"{e[fx]['mean_loss_first_half_positions']:.4f}",
                    f"{beyond:.4f}",
                    f"{math.exp(min(beyond, 700)):.1f}",
                ]
            )
            + " |"
        )
    lines += ["", f"Loss per bucket of {args.bucket} positions at {fx}:", ""]
    nb = len(next(iter(results.values()))[fx]["bucket_losses"])
    lines.append("| run | " + " | ".join(f"{i * args.bucket}-{(i + 1) * args.bucket - 1}" for i in range(nb)) + " |")
    lines.append("|" + "---|" * (nb + 1))
    for name, e in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in e[fx]["bucket_losses"]) + " |")
    (args.out_dir / "length_generalization.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, e in results.items():
        ax.plot(e[fx]["per_position"], label=f"{name} ({e['positions']})", alpha=0.85)
    train_len = next(iter(results.values()))["train_length"]
    ax.axvline(train_len, color="k", ls="--", lw=1, label="training length")
    ax.set_xlabel("position in window")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_yscale("log")
    ax.set_title(f"Per-position validation loss at {fx} the training length")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out_dir / "length_generalization.png", dpi=110)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
