"""Plot final validation loss against learning rate, one line per model, one panel per model size and training length.

    uv run python -m assignment_experiments.studies.plot_lr results/runs/ladder_* \
        --out results/studies/scale_ladder/loss_vs_lr.png

A learning-rate check is only read right as a curve: a best rate at the edge of the swept range is a lower or upper
bound, not an optimum, and a flat bottom says the choice hardly matters. For each run, ``config.json`` gives
``optim.lr`` and the settings that make a variant, and ``summary.json`` the architecture (hybrid pattern),
``final_val_loss``, ``num_params_non_embedding``, ``num_params``, ``num_params_active`` and ``tokens_seen``.

Panels: runs trained on the same number of tokens whose active non-embedding parameter counts lie within
``--size-ratio`` of each other share a panel (the rungs of a scale ladder, say; an MoE shares the panel of the dense
model with its compute per token, and its legend names it). Runs of one model at one rate in a panel (seeds) are
pooled into mean +- sample std (runs that differ in more than their seed are refused, with the setting named).
Each line's best rate is drawn as a filled star, and the Markdown table printed
says when that best lies at the edge of the rates tried.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from assignment_experiments.studies.figures import save_figure
from assignment_experiments.studies.plot_scaling import run_point
from assignment_experiments.studies.seed_pooling import check_seeds


def lr_point(run_dir: Path) -> dict | None:
    """``plot_scaling.run_point`` plus the run's peak learning rate, or None (with a note)."""
    point = run_point(run_dir)
    if point is None:
        return None
    if point["setting"] is None:  # the rate is read from the config run_point already parsed
        print(f"skipping {run_dir}: no config.json, so no optim.lr", file=sys.stderr)
        return None
    return {**point, "lr": float(point["setting"]["optim.lr"])}


def panels(points: list[dict], size_ratio: float) -> list[list[dict]]:
    """Points grouped by tokens seen, then by active non-embedding parameter count: sorted by size, a new panel starts
    wherever the next run is more than ``size_ratio`` times larger than the smallest run of the current panel."""
    by_tokens: dict[int | None, list[dict]] = defaultdict(list)
    for p in points:
        by_tokens[p["tokens"]].append(p)
    groups = []
    for _, members in sorted(by_tokens.items(), key=lambda kv: kv[0] or 0):
        members.sort(key=lambda p: p["active"] or 0)
        current: list[dict] = []
        for p in members:
            if current and (p["active"] or 0) > size_ratio * (current[0]["active"] or 0):
                groups.append(current)
                current = []
            current.append(p)
        groups.append(current)
    groups.sort(key=lambda g: (min(p["active"] or 0 for p in g), min(p["tokens"] or 0 for p in g)))
    return groups


def panel_title(group: list[dict]) -> str:
    params = [p["active"] for p in group if p["active"]]
    tokens = group[0]["tokens"]
    active = " active" if any(p["active"] != p["params"] for p in group) else ""  # an MoE in the panel
    size = f"~{statistics.median(params) / 1e6:.2g}M{active} non-embedding params" if params else "size unknown"
    return f"{size}, {tokens / 1e6:.3g}M tokens" if tokens else size


def curves(group: list[dict]) -> dict[str, list[dict]]:
    """Per model label: one row per learning rate (ascending) with mean and sample std of the loss over its runs,
    which must be seeds of one setting (seed_pooling.check_seeds raises MixedSettingsError otherwise)."""
    by: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for p in group:
        by[(p["label"], p["lr"])].append(p)
    lines: dict[str, list[dict]] = defaultdict(list)
    for (label, lr), members in sorted(by.items()):
        check_seeds(f"the runs of {label} at lr {lr:g} in one panel", [(m["run"], m["setting"]) for m in members])
        losses = [m["loss"] for m in members]
        lines[label].append({
            "lr": lr, "loss": statistics.mean(losses), "n": len(losses),
            "std": statistics.stdev(losses) if len(losses) > 1 else 0.0,
        })  # fmt: skip
    return dict(lines)


def best(line: list[dict]) -> tuple[dict, str]:
    """The row with the lowest mean loss, and where it lies: "inside" the rates tried, or at their "lowest"/"highest"
    edge (then the true best may lie beyond it). A single rate is "only rate"."""
    row = min(line, key=lambda r: r["loss"])
    if len(line) == 1:
        return row, "only rate"
    if row is line[0]:
        return row, "lowest"
    if row is line[-1]:
        return row, "highest"
    return row, "inside"


def markdown(groups: list[list[dict]]) -> str:
    rows = ["| panel | model | lr: final val loss (seeds) | best lr | best at |", "| --- | --- | --- | --- | --- |"]
    for group in groups:
        for label, line in sorted(curves(group).items()):
            cells = ", ".join(
                f"{r['lr']:g}: {r['loss']:.3f}" + (f" ± {r['std']:.3f} ({r['n']})" if r["n"] > 1 else "") for r in line
            )
            row, where = best(line)
            rows.append(f"| {panel_title(group)} | {label} | {cells} | {row['lr']:g} | {where} |")
    return "\n".join(rows)


def plot(groups: list[list[dict]], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    labels = sorted({p["label"] for group in groups for p in group})
    palette = [f"C{i}" for i in range(10)] if len(labels) <= 10 else list(plt.cm.tab20.colors)  # no repeats
    colors = {label: palette[i % len(palette)] for i, label in enumerate(labels)}  # one colour per model, all panels
    many = len(labels) > 6  # a long legend goes beside the panels, not over the curves
    fig, axes = plt.subplots(1, len(groups), figsize=(5.0 * len(groups) + 2.5 * many, 4.4), squeeze=False)
    handles = {}
    for ax, group in zip(axes[0], groups, strict=True):
        for label, line in sorted(curves(group).items()):
            xs, ys, es = ([r[k] for r in line] for k in ("lr", "loss", "std"))
            handles[label] = ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, color=colors[label], label=label)
            row, _ = best(line)
            ax.plot([row["lr"]], [row["loss"]], marker="*", markersize=14, color=colors[label])
        ax.set_xscale("log")
        rates = sorted({p["lr"] for p in group})
        ax.set_xticks(rates, [f"{lr:g}" for lr in rates], rotation=30)  # the rates tried, not log-decade ticks
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("peak learning rate")
        ax.set_title(panel_title(group), fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("final validation loss")
    placement = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)} if many else {}
    axes[0][-1].legend(
        [handles[label] for label in labels], labels, fontsize=8, title="star: best rate", title_fontsize=8, **placement
    )
    save_figure(fig, out, title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.plot_lr", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--size-ratio", type=float, default=1.5,
                        help="runs within this factor of active non-embedding parameters share a panel "
                        "(default: %(default)s)")  # fmt: skip
    parser.add_argument("--title", default="Final validation loss vs learning rate",
                        help="plot title (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.size_ratio < 1:
        parser.error(f"--size-ratio must be >= 1, got {args.size_ratio}")
    try:
        points = [p for p in (lr_point(r) for r in args.runs) if p is not None]
        groups = panels(points, args.size_ratio)
        for group in groups:  # the seeds of every point must be one setting, checked before anything is drawn
            curves(group)
    except ValueError as error:  # MixedSettingsError, or a damaged config.json or config_changes.json
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not points:
        print("no finished runs with a final_val_loss and an optim.lr", file=sys.stderr)
        return 2
    plot(groups, args.out, args.title)
    print(markdown(groups))
    return 0


if __name__ == "__main__":
    sys.exit(main())
