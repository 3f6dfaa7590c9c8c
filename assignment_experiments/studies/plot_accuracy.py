"""Plot synthetic-task accuracy against model width, one line per architecture and one panel per sequence length.

    uv run python -m assignment_experiments.studies.plot_accuracy runs/mqar_* \
        --out results/studies/associative_recall/accuracy_vs_width.png

Reads each run's ``summary.json`` (``final_val_accuracy``, ``architecture``, ``pattern``) and ``config.json``
(``model.d_model``, ``data.task_options.seq_len``); runs without an accuracy (not a synthetic task) are skipped.
Also prints the accuracy grid as a Markdown table (rows: architecture, columns: sequence length x width; repeated
seeds of a cell are shown as mean +- std).

``--vs-step`` plots learning curves instead: each run's periodic evaluation accuracy (``metrics.jsonl``) against the
training step, one line per run, with the MQAR value-guessing floor dashed (and, for runs whose task writes the answers
into the input, the elimination floor dotted), which shows a plateau and its escape::

    uv run python -m assignment_experiments.studies.plot_accuracy runs/mqarz_* --vs-step --out curves.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from assignment_experiments.studies.figures import save_figure


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


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f} (n={len(values)})"


def markdown_grid(points: list[dict]) -> str:
    columns = sorted({(p["seq_len"], p["width"]) for p in points})
    archs = sorted({p["arch"] for p in points})
    cell: dict[tuple, list[float]] = defaultdict(list)
    for p in points:
        cell[(p["arch"], p["seq_len"], p["width"])].append(p["accuracy"])
    header = "| architecture | " + " | ".join(f"L={s}, d={w}" for s, w in columns) + " |"
    lines = [header, "|" + " --- |" * (len(columns) + 1)]
    for arch in archs:
        lines.append(f"| {arch} | " + " | ".join(_cell(cell.get((arch, s, w), [])) for s, w in columns) + " |")
    return "\n".join(lines)


def load_curves(run_dirs: list[Path]) -> list[tuple[str, list[int], list[float], dict[str, float]]]:
    """(run name, eval steps, eval accuracies, MQAR floors by name, empty for other tasks) for every run whose
    metrics hold accuracies."""
    from assignment_experiments.report import mqar_floors

    curves = []
    for run_dir in run_dirs:
        metrics = run_dir / "metrics.jsonl"
        if not metrics.is_file():
            print(f"skipping {run_dir}: no metrics.jsonl", file=sys.stderr)
            continue
        records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        evals = [r for r in records if r.get("kind") == "eval" and r.get("val_accuracy") is not None]
        if not evals:
            print(f"skipping {run_dir}: no evaluation accuracies", file=sys.stderr)
            continue
        data = json.loads((run_dir / "config.json").read_text()).get("data", {})
        is_mqar = data.get("task") in ("mqar", "associative_recall")
        floors = mqar_floors(data.get("task_options", {})) if is_mqar else {}
        curves.append((run_dir.name, [r["step"] for r in evals], [r["val_accuracy"] for r in evals], floors))
    return curves


def plot_curves(curves: list[tuple[str, list[int], list[float], dict[str, float]]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    if len(curves) > 10:  # the default cycle repeats after ten colours
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for name, steps, accuracies, _ in curves:
        ax.plot(steps, accuracies, label=name, linewidth=1.2)
    floors = sorted({(round(value, 4), label) for *_, named in curves for label, value in named.items()})
    for floor, label in floors:
        ax.axhline(floor, color="gray", linestyle="--" if label.startswith("value") else ":", linewidth=0.8)
        ax.text(0.01, floor + 0.01, f"{label} {floor:.3f}", transform=ax.get_yaxis_transform(),
                fontsize=7, color="gray")  # fmt: skip
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlim(left=0)
    ax.set_xlabel("training step")
    ax.set_ylabel("answer accuracy (periodic evaluation)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # outside: the curves fill the axes
    ax.set_title(title)
    save_figure(fig, out)


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
    save_figure(fig, out, title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.plot_accuracy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of synthetic-task runs")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--title", default=None, help="plot title (default: by plot kind)")
    parser.add_argument("--vs-step", action="store_true", help="plot accuracy against training step, one line per run")
    args = parser.parse_args(argv)
    if args.vs_step:
        curves = load_curves(args.runs)
        if not curves:
            print("no runs with evaluation accuracies in metrics.jsonl", file=sys.stderr)
            return 2
        plot_curves(curves, args.out, args.title or "Answer accuracy during training")
        for name, steps, accuracies, _ in curves:
            print(f"{name}: {accuracies[-1]:.3f} at step {steps[-1]} (best {max(accuracies):.3f})")
        return 0
    points = load_points(args.runs)
    if not points:
        print("no runs with final_val_accuracy", file=sys.stderr)
        return 2
    plot(points, args.out, args.title or "Synthetic-task accuracy vs width")
    print(markdown_grid(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
