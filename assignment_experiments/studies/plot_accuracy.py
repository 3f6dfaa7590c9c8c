"""Plot synthetic-task accuracy against model width, one line per architecture and one panel per sequence length.

    uv run python -m assignment_experiments.studies.plot_accuracy runs/mqar_* \
        --out results/studies/associative_recall/accuracy_vs_width.png

Reads each run's ``summary.json`` (``final_val_accuracy``, ``architecture``, ``pattern``) and ``config.json``
(``model.d_model``, ``data.task_options.seq_len``); runs without an accuracy (not a synthetic task) are skipped.
Also prints the accuracy grid as a Markdown table (rows: architecture, columns: sequence length x width).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path


def load_points(run_dirs: list[Path]) -> list[dict]:
    """One record per finished synthetic-task run: arch label, width, seq_len, accuracy."""
    points = []
    for run_dir in run_dirs:
        summary_path, config_path = run_dir / "summary.json", run_dir / "config.json"
        if not (summary_path.is_file() and config_path.is_file()):
            print(f"skipping {run_dir}: no summary.json/config.json", file=sys.stderr)
            continue
        summary, config = json.loads(summary_path.read_text()), json.loads(config_path.read_text())
        accuracy = summary.get("final_val_accuracy")
        if accuracy is None:
            print(f"skipping {run_dir}: no final_val_accuracy", file=sys.stderr)
            continue
        arch = summary.get("architecture") or config["model"]["architecture"]
        pattern = summary.get("pattern") or config["model"].get("pattern")
        label = f"{arch} {pattern}" if arch == "hybrid" and pattern else arch
        seq_len = config["data"].get("task_options", {}).get("seq_len") or config["model"]["context_length"]
        points.append({"arch": label, "width": config["model"]["d_model"], "seq_len": seq_len, "accuracy": accuracy})
    return points


def markdown_grid(points: list[dict]) -> str:
    columns = sorted({(p["seq_len"], p["width"]) for p in points})
    archs = sorted({p["arch"] for p in points})
    cell = {(p["arch"], p["seq_len"], p["width"]): p["accuracy"] for p in points}
    header = "| architecture | " + " | ".join(f"L={s}, d={w}" for s, w in columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for arch in archs:
        values = [cell.get((arch, s, w)) for s, w in columns]
        lines.append(f"| {arch} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in values) + " |")
    return "\n".join(lines)


def plot(points: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq_lens = sorted({p["seq_len"] for p in points})
    fig, axes = plt.subplots(1, len(seq_lens), figsize=(5 * len(seq_lens), 4), squeeze=False, sharey=True)
    for ax, seq_len in zip(axes[0], seq_lens, strict=True):
        lines: dict[str, list[tuple[int, float]]] = defaultdict(list)
        for p in points:
            if p["seq_len"] == seq_len:
                lines[p["arch"]].append((p["width"], p["accuracy"]))
        for arch in sorted(lines):
            xs, ys = zip(*sorted(lines[arch]), strict=True)
            ax.plot(xs, ys, marker="o", label=arch)
        widths = sorted({p["width"] for p in points})
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xlabel("d_model")
        ax.set_title(f"sequence length {seq_len}")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("answer accuracy")
    axes[0][-1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.plot_accuracy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of synthetic-task runs")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--title", default="Synthetic-task accuracy vs width", help="plot title (default: %(default)s)")
    args = parser.parse_args(argv)
    points = load_points(args.runs)
    if not points:
        print("no runs with final_val_accuracy", file=sys.stderr)
        return 2
    plot(points, args.out, args.title)
    print(markdown_grid(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
