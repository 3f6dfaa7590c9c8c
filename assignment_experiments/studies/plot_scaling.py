"""Plot final validation loss against model size, training compute or wall-clock, one line per architecture.

    uv run python -m assignment_experiments.studies.plot_scaling runs/ladder_* --x params flops \
        --out results/studies/scale_ladder/loss_vs_scale.png

For each run: ``summary.json`` gives the architecture (and hybrid pattern), ``final_val_loss``,
``num_params_non_embedding``, ``num_params``, ``num_params_active``, ``tokens_seen``, ``model_flops_per_token`` and
``runtime_s``; ``config.json`` the settings that make a variant (an MoE FFN, mHC, a short convolution, ...), which the
line's label names (``model_labels.variant_label``). The x axes:

- ``params``: non-embedding parameters;
- ``active``: non-embedding parameters a token passes through (an MoE counts its router and top-k experts, so that it
  sits beside the dense model of equal compute per token; for every other model the same as ``params``);
- ``flops``: training FLOPs, ``model_flops_per_token x tokens_seen`` (the convention of ``models/flops.py``:
  6 x weight-matrix entries + attention scores, element-wise work such as the selective scan ignored);
- ``time``: training wall-clock (``runtime_s``; on a shared CPU this is noisy).

Runs whose names differ only in a trailing seed suffix (``_s1``, ``_s2``) are pooled into mean +- sample std (error
bars). One panel per x axis; prints the pooled points as a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from assignment_experiments.run_files import read_json
from assignment_experiments.studies.figures import save_figure
from assignment_experiments.studies.model_labels import variant_label
from assignment_experiments.studies.seed_pooling import check_seeds, seed_of, training_setting

X_AXES = {
    "params": "non-embedding parameters",
    "active": "active non-embedding parameters per token",  # summary's num_params_active counts embeddings too
    "flops": "training FLOPs",
    "time": "training wall-clock (s)",
}


def run_point(run_dir: Path) -> dict | None:
    """The run's label and its x values and final loss, or None (with a note) when it has no finished summary."""
    path = run_dir / "summary.json"
    if not path.is_file():
        print(f"skipping {run_dir}: no summary.json", file=sys.stderr)
        return None
    s = read_json(path)
    if s.get("final_val_loss") is None:
        print(f"skipping {run_dir}: no final_val_loss", file=sys.stderr)
        return None
    setting = training_setting(run_dir)
    flops = s.get("model_flops_per_token")
    params, total, active = (s.get(k) for k in ("num_params_non_embedding", "num_params", "num_params_active"))
    return {
        "run": run_dir.name,
        "setting": setting,
        "label": variant_label(setting, s),
        "loss": s["final_val_loss"],
        "params": params,
        "active": active - (total - params) if None not in (params, total, active) else params,
        "flops": flops * s["tokens_seen"] if flops and s.get("tokens_seen") else None,
        "tokens": s.get("tokens_seen"),
        "time": s.get("runtime_s"),
    }


def pooled(points: list[dict], axes: list[str]) -> list[dict]:
    """One row per seed group (``X``, ``X_s1``, ...): label, group name, the mean of each x axis, mean and sample
    std of the loss, n. Raises MixedSettingsError when a group's runs differ in more than their seed."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for p in points:
        groups[seed_of(p["run"])[0]].append(p)
    rows = []
    for group, members in sorted(groups.items()):
        check_seeds(f"the runs pooled as {group}", [(m["run"], m["setting"]) for m in members])
        losses = [m["loss"] for m in members]
        row = {"label": members[0]["label"], "group": group, "loss": statistics.mean(losses), "n": len(losses)}
        row["std"] = statistics.stdev(losses) if len(losses) > 1 else 0.0
        for axis in axes:
            values = [m[axis] for m in members if m[axis] is not None]
            row[axis] = statistics.mean(values) if len(values) == len(members) else None
        rows.append(row)
    return rows


def markdown(rows: list[dict], axes: list[str]) -> str:
    lines = ["| model | runs | " + " | ".join(X_AXES[a] for a in axes) + " | final val loss | seeds |"]
    lines.append("|" + " --- |" * (len(axes) + 4))
    for r in sorted(rows, key=lambda r: (r["label"], r[axes[0]] or 0)):
        cells = " | ".join("-" if r[a] is None else f"{r[a]:.3g}" for a in axes)
        loss = f"{r['loss']:.3f} ± {r['std']:.3f}" if r["n"] > 1 else f"{r['loss']:.3f}"  # no spread from one seed
        lines.append(f"| {r['label']} | `{r['group']}` | {cells} | {loss} | {r['n']} |")
    return "\n".join(lines)


def plot(points: list[dict], axes: list[str], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, panels = plt.subplots(1, len(axes), figsize=(5.5 * len(axes), 4.2), squeeze=False, sharey=True)
    rows = pooled(points, axes)
    for ax, axis in zip(panels[0], axes, strict=True):
        for label in sorted({r["label"] for r in rows}):
            line = sorted((r[axis], r["loss"], r["std"]) for r in rows if r["label"] == label and r[axis] is not None)
            if line:
                xs, means, stds = zip(*line, strict=True)
                ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xlabel(X_AXES[axis])
        ax.grid(alpha=0.3, which="both")
    panels[0][0].set_ylabel("final validation loss")
    panels[0][-1].legend(fontsize=8)
    save_figure(fig, out, title)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.plot_scaling", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    parser.add_argument("--x", nargs="+", choices=sorted(X_AXES), default=["params", "flops"],
                        help="x axes, one panel each (default: %(default)s)")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--title", default="Final validation loss vs scale", help="plot title (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        points = [p for p in (run_point(r) for r in args.runs) if p is not None]
        rows = pooled(points, args.x)  # the seeds of every group must be one setting, checked before anything is drawn
    except ValueError as error:  # MixedSettingsError, or a damaged config.json or config_changes.json
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not points:
        print("no finished runs with a final_val_loss", file=sys.stderr)
        return 2
    plot(points, args.x, args.out, args.title)
    print(markdown(rows, args.x))
    return 0


if __name__ == "__main__":
    sys.exit(main())
