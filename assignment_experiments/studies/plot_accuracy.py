"""Plot synthetic-task accuracy against model width, one line per architecture and one panel per sequence length.

    uv run python -m assignment_experiments.studies.plot_accuracy runs/mqar_* \
        --out results/studies/associative_recall/accuracy_vs_width.png

Reads each run's ``summary.json`` (``final_val_accuracy``, ``architecture``, ``pattern``) and ``config.json``
(``model.d_model``, ``data.task_options.seq_len``, ``optim.lr``); runs without an accuracy (not a synthetic task) are
skipped. The line label is the architecture plus what sets a variant apart (``model_labels.variant_label``: a short
convolution before attention, an SSM convolution cut to width 1, ...). Seeds of one (architecture, length, width, lr)
are pooled; runs pooled so must differ in nothing else that shapes training (a step budget, a batch size or a rate
changed on ``--resume`` is an error that names the runs, to be left out with ``--exclude``). Where a cell was trained
at several learning rates, the best one is shown, as Zoology's figure does (its lr is printed): the best mean
accuracy or, for runs that stop at a target accuracy, the rate at which most seeds reached it, fastest. The plot
draws that mean with each seed as a dot and, for MQAR, the value-guessing floor of each panel dashed. It also prints
the grid as a Markdown table (rows: architecture, columns: sequence length x width; mean +- std over seeds). Where the
runs stopped at a target accuracy (``train.target_accuracy``), a second plot row and a second table give the step at
which each seed reached it: when every line ends at the target, that is where they differ.

``--vs-step`` plots learning curves instead: each run's periodic evaluation accuracy (``metrics.jsonl``) against the
training step, one line per run, with the MQAR value-guessing floor dashed (and, for runs whose task writes the answers
into the input, the elimination floor dotted), which shows a plateau and its escape::

    uv run python -m assignment_experiments.studies.plot_accuracy runs/mqarz_* --vs-step --out curves.png
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from assignment_experiments.run_files import UnreadableRecordError, read_config_changes, read_json
from assignment_experiments.studies.figures import save_figure
from assignment_experiments.studies.model_labels import variant_label
from assignment_experiments.studies.seed_pooling import CHANGED_ON_RESUME, change_text, check_seeds, training_setting


def load_points(run_dirs: list[Path]) -> list[dict]:
    """One record per finished synthetic-task run: arch label, width, seq_len, lr, accuracy, MQAR floor (or None)."""
    from assignment_experiments.report import mqar_floors

    points = []
    for run_dir in run_dirs:
        summary_path, config_path = run_dir / "summary.json", run_dir / "config.json"
        if not (summary_path.is_file() and config_path.is_file()):
            print(f"skipping {run_dir}: no summary.json/config.json", file=sys.stderr)
            continue
        setting, summary, config = training_setting(run_dir), read_json(summary_path), read_json(config_path)
        accuracy = summary.get("final_val_accuracy")
        if accuracy is None:
            print(f"skipping {run_dir}: no final_val_accuracy", file=sys.stderr)
            continue
        data = config["data"]
        seq_len = data.get("task_options", {}).get("seq_len") or config["model"]["context_length"]
        is_mqar = data.get("task") in ("mqar", "associative_recall")
        floor = mqar_floors(data.get("task_options", {})).get("value-guessing floor") if is_mqar else None
        points.append({"name": run_dir.name, "setting": setting,
                       "arch": variant_label(setting, summary), "width": config["model"]["d_model"],
                       "seq_len": seq_len, "lr": config.get("optim", {}).get("lr"), "accuracy": accuracy,
                       "floor": floor, "reached_step": summary.get("target_reached_step"),
                       "seed": config.get("train", {}).get("seed", 0),
                       "max_steps": config.get("train", {}).get("max_steps")})  # fmt: skip
    return points


def _rank(seeds: list[dict]) -> tuple[float, float, float]:
    """How good one learning rate's seeds are, larger is better: the share of seeds that reached the target, then how
    fast (minus the median step), then the mean final accuracy. A run that stops at the target ends a little above or
    below it by chance, so among rates that all reach it, the speed decides, not the last decimal."""
    reached = [p["reached_step"] for p in seeds if p.get("reached_step") is not None]
    speed = -statistics.median(reached) if reached else float("-inf")
    return len(reached) / len(seeds), speed, statistics.mean(p["accuracy"] for p in seeds)


def best_cells(points: list[dict], field: str = "accuracy") -> dict[tuple, tuple[float | None, list]]:
    """(arch, seq_len, width) -> (lr, each seed's ``field`` in seed order) at the cell's best learning rate
    (``_rank``: without a target accuracy, simply the best mean accuracy). Raises MixedSettingsError when the runs
    of one (cell, lr) differ in more than their seed (a step budget, a batch size, a rate changed on resume)."""
    by_lr: dict[tuple, list[dict]] = defaultdict(list)
    for p in points:
        by_lr[(p["arch"], p["seq_len"], p["width"], p["lr"])].append(p)
    best: dict[tuple, tuple[float | None, list[dict]]] = {}
    for (arch, seq_len, width, lr), seeds in sorted(by_lr.items(), key=lambda kv: str(kv[0])):
        rate = f"lr {lr:g}" if lr is not None else "the default lr"
        check_seeds(f"the runs of {arch} at L={seq_len}, d={width}, {rate}", [(p["name"], p["setting"]) for p in seeds],
                    "pass the runs of one setting (leave the others out with --exclude)")  # fmt: skip
        key = (arch, seq_len, width)
        if key not in best or _rank(seeds) > _rank(best[key][1]):
            best[key] = (lr, seeds)
    by_seed = {key: (lr, sorted(seeds, key=lambda p: p["seed"])) for key, (lr, seeds) in best.items()}
    return {key: (lr, [p[field] for p in seeds]) for key, (lr, seeds) in by_seed.items()}


def _cell(values: list[float], lr: float | None = None) -> str:
    """One seed's accuracy, or mean +- sample std (n) over several; with the cell's learning rate when given."""
    rate = f"lr {lr:g}" if lr is not None else ""
    if len(values) == 1:
        return f"{values[0]:.3f}" + (f" at {rate}" if rate else "")
    spread = f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"
    return f"{spread} (n={len(values)}" + (f", {rate}" if rate else "") + ")"


NOT_RUN = "not run"  # a grid cell with no runs; "-" is a seed that did not reach the target


def _markdown_table(points: list[dict], corner: str, field: str, cell) -> str:
    """Rows: architectures; columns: (sequence length, width); each cell ``cell(lr, seed values of field)`` at the
    cell's best learning rate."""
    columns = sorted({(p["seq_len"], p["width"]) for p in points})
    cells = best_cells(points, field=field)
    lines = [
        f"| {corner} | " + " | ".join(f"L={s}, d={w}" for s, w in columns) + " |",
        "|" + " --- |" * (len(columns) + 1),
    ]
    for arch in sorted({p["arch"] for p in points}):
        row = [cell(*cells[(arch, s, w)]) if (arch, s, w) in cells else NOT_RUN for s, w in columns]
        lines.append(f"| {arch} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown_grid(points: list[dict]) -> str:
    """Final accuracy: each cell the best learning rate's seeds, with that rate named when the runs used more than
    one."""
    several_lrs = len({p["lr"] for p in points}) > 1
    return _markdown_table(points, "architecture", "accuracy", lambda lr, v: _cell(v, lr if several_lrs else None))


def markdown_steps_grid(points: list[dict]) -> str:
    """The same cells as ``markdown_grid``, as the step at which each seed reached the run's target accuracy ("-"
    for a seed that did not): where every architecture ends at the target, this is what tells them apart."""

    def steps(_lr, values: list) -> str:
        return " / ".join("-" if step is None else f"{step:,}" for step in values)

    return _markdown_table(points, "steps to target", "reached_step", steps)


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
        try:
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            problem = f"{metrics} has a line that is not valid JSON ({error.msg})"
            raise ValueError(f"{problem}; fix it or leave the run out") from None
        evals = [r for r in records if r.get("kind") == "eval" and r.get("val_accuracy") is not None]
        if not evals:
            print(f"skipping {run_dir}: no evaluation accuracies", file=sys.stderr)
            continue
        data = read_json(run_dir / "config.json").get("data", {})
        is_mqar = data.get("task") in ("mqar", "associative_recall")
        floors = mqar_floors(data.get("task_options", {})) if is_mqar else {}
        curves.append((run_dir.name, [r["step"] for r in evals], [r["val_accuracy"] for r in evals], floors))
    return curves


# How a label names the two settings runs of one variant most often differ in; any other is named "key value".
SETTING_FORMS = {"optim.lr": "lr {:g}", "train.max_steps": "{:,} steps"}


def run_variants(run_dirs: list[Path]) -> dict[str, str]:
    """Run folder name -> :func:`variant_label` (seeds of one setting share a label), for runs with a config. Runs
    of one variant that differ in any setting but the seed (seed_pooling.training_setting) get the settings they
    differ in added to their label, so they are not drawn as seeds of one setting: ``hymba, 4,000 steps``,
    ``hymba, lr 0.01``, ``hymba, train.batch_size 512``. A run whose setting a ``--resume`` changed
    (``config_changes.json``) is split from runs that used its final value throughout and labelled with the change,
    since its schedule is neither the old one nor the new: ``hymba, 4,000 steps (train.max_steps 2000 -> 4000 at
    step 2,000)``, ``hymba, optim.min_lr 0.0002 -> 0.0001 at step 700``. Raises ValueError (UnreadableRecordError
    for ``config_changes.json``) naming a run file that cannot be read."""
    variants, settings, changes = {}, {}, {}
    for run_dir in run_dirs:
        if (run_dir / "config.json").is_file():
            summary_path = run_dir / "summary.json"
            settings[run_dir.name] = training_setting(run_dir)
            summary = read_json(summary_path) if summary_path.is_file() else {}
            variants[run_dir.name] = variant_label(settings[run_dir.name], summary)
            recorded = defaultdict(list)
            for c in read_config_changes(run_dir):
                recorded[c["key"]].append(change_text(c))
            changes[run_dir.name] = {key: "; ".join(texts) for key, texts in recorded.items()}
    labels = dict(variants)
    for label in set(variants.values()):
        names = [name for name in variants if variants[name] == label]
        keys = {key for name in names for key in [*settings[name], *changes[name]]} - {CHANGED_ON_RESUME}
        split = [key for key in keys
                 if len({(json.dumps(settings[n].get(key)), changes[n].get(key, "")) for n in names}) > 1]  # fmt: skip
        split.sort(
            key=lambda key: (list(SETTING_FORMS).index(key) if key in SETTING_FORMS else len(SETTING_FORMS), key)
        )
        for name in names:
            labels[name] += "".join(
                _label_part(key, settings[name].get(key), changes[name].get(key, "")) for key in split
            )
    return labels


def _label_part(key: str, value, change: str) -> str:
    """What a run's label gains for a setting ``key`` its variant is split on: the value (``SETTING_FORMS`` for lr
    and budget), with what a resume changed; for another setting changed on resume, the change alone."""
    form = SETTING_FORMS.get(key)
    if form is None:
        return f", {key} {change}" if change else f", {key} {value}"
    return f", {form.format(value)}" + (f" ({key} {change})" if change else "")


def plot_curves(
    curves: list[tuple[str, list[int], list[float], dict[str, float]]],
    out: Path,
    title: str,
    variants: dict[str, str] | None = None,
) -> list[str]:
    """Accuracy against step, one line per run; with ``variants`` (run name -> label), one colour and one legend
    entry per variant, its seeds drawn alike. Returns the legend's labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    if variants is None:
        if len(curves) > 10:  # the default cycle repeats after ten colours
            ax.set_prop_cycle(color=plt.cm.tab20.colors)
        for name, steps, accuracies, _ in curves:
            ax.plot(steps, accuracies, label=name, linewidth=1.2)
    else:
        groups = list(dict.fromkeys(variants[name] for name, *_ in curves))
        palette = plt.cm.tab10.colors if len(groups) <= 10 else plt.cm.tab20.colors
        counts = {group: sum(variants[name] == group for name, *_ in curves) for group in groups}
        drawn = set()
        for name, steps, accuracies, _ in curves:
            group = variants[name]
            label = None if group in drawn else f"{group} ({counts[group]} run{'s' if counts[group] > 1 else ''})"
            drawn.add(group)
            colour = palette[groups.index(group) % len(palette)]
            ax.plot(steps, accuracies, label=label, color=colour, linewidth=1.2, alpha=0.85)
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
    labels = ax.get_legend_handles_labels()[1]
    save_figure(fig, out, title)  # a figure title, centred over axes and legend, wrapped when long
    return labels


def plot(points: list[dict], out: Path, title: str) -> None:
    """Accuracy vs width, one panel per sequence length; when runs stopped at a target accuracy, a second row with the
    step each seed reached it (a cross at the step cap for a seed that did not), which separates lines that all end at
    the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seq_lens = sorted({p["seq_len"] for p in points})
    widths = sorted({p["width"] for p in points})
    archs = sorted({p["arch"] for p in points})
    colours = {arch: plt.cm.tab10.colors[i % 10] for i, arch in enumerate(archs)}
    cells = best_cells(points)
    with_steps = any(p.get("reached_step") is not None for p in points)
    steps_cells = best_cells(points, field="reached_step") if with_steps else {}
    caps = best_cells(points, field="max_steps") if with_steps else {}
    rows = 2 if with_steps else 1
    fig, axes = plt.subplots(rows, len(seq_lens), figsize=(5 * len(seq_lens), 4 * rows), squeeze=False, sharey="row")
    for col, seq_len in enumerate(seq_lens):
        ax = axes[0][col]
        for arch in archs:
            here = sorted((w, values) for (a, s, w), (_, values) in cells.items() if a == arch and s == seq_len)
            if not here:
                continue
            xs = [w for w, _ in here]
            ax.plot(xs, [statistics.mean(v) for _, v in here], marker="o", color=colours[arch], label=arch)
            for w, values in here:  # every seed, so a mean of 0.5 from one solved and one failed run shows as such
                ax.scatter([w] * len(values), values, color=colours[arch], alpha=0.35, s=14, linewidths=0)
        floors = {p["floor"] for p in points if p["seq_len"] == seq_len and p["floor"] is not None}
        for floor in floors:
            ax.axhline(floor, color="gray", linestyle="--", linewidth=0.8)
            ax.text(0.01, floor + 0.01, f"guessing floor {floor:.3f}", transform=ax.get_yaxis_transform(),
                    fontsize=7, color="gray")  # fmt: skip
        ax.set_title(f"sequence length {seq_len}")
        ax.set_ylim(-0.02, 1.02)
        if with_steps:
            _plot_steps(axes[1][col], archs, colours, seq_len, steps_cells, caps)
        for row in range(rows):
            axes[row][col].set_xscale("log", base=2)
            axes[row][col].set_xticks(widths, [str(w) for w in widths])
            axes[row][col].set_xlim(widths[0] / 2**0.3, widths[-1] * 2**0.3)  # the same widths axis in every panel
            axes[row][col].set_xlabel("d_model")
            axes[row][col].grid(alpha=0.3)
    axes[0][0].set_ylabel("answer accuracy (mean over seeds; dots: seeds)")
    if with_steps:
        axes[1][0].set_ylabel("step the target was reached (x: not by the cap)")
    handles = {label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels(), strict=True)}
    axes[0][-1].legend(handles.values(), handles.keys(), fontsize=8)  # every architecture, whichever panel has it
    save_figure(fig, out, title)


def _plot_steps(ax, archs: list[str], colours: dict, seq_len: int, steps_cells: dict, caps: dict) -> None:
    """One panel of the steps-to-target row: the median over the seeds that reached the target, every seed a dot; a
    seed that missed is an x at its cap, shifted sideways per architecture so that equal caps do not hide each other."""
    for index, arch in enumerate(archs):
        nudge = 2 ** (0.04 * (index - (len(archs) - 1) / 2))  # the width axis is log2
        here = sorted((w, values) for (a, s, w), (_, values) in steps_cells.items() if a == arch and s == seq_len)
        medians = [(w, statistics.median(v for v in values if v is not None)) for w, values in here
                   if any(v is not None for v in values)]  # fmt: skip
        if medians:
            ax.plot(*zip(*medians, strict=True), marker="o", color=colours[arch], label=arch)
        for w, values in here:
            cap = caps[(arch, seq_len, w)][1]
            reached = [v for v in values if v is not None]
            missed = [c for v, c in zip(values, cap, strict=True) if v is None and c is not None]
            ax.scatter([w] * len(reached), reached, color=colours[arch], alpha=0.35, s=14, linewidths=0)
            ax.scatter([w * nudge] * len(missed), missed, color=colours[arch], marker="x", s=30)
    ax.set_yscale("log")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.plot_accuracy", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories of synthetic-task runs")
    parser.add_argument("--out", type=Path, required=True, help="output PNG")
    parser.add_argument("--title", default=None, help="plot title (default: by plot kind)")
    parser.add_argument("--vs-step", action="store_true", help="plot accuracy against training step, one line per run")
    parser.add_argument("--by-variant", action="store_true",
                        help="with --vs-step: one colour and one legend entry per architecture variant (and per "
                        "setting where its runs differ in one: a learning rate, a step budget), its seeds drawn "
                        "alike (for many runs of a few settings)")  # fmt: skip
    parser.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                        help="leave out runs whose folder name matches this shell pattern (repeatable), e.g. runs "
                        "that a glob catches but that trained on another budget")  # fmt: skip
    args = parser.parse_args(argv)
    args.runs = [run for run in args.runs if not any(fnmatch.fnmatchcase(run.name, p) for p in args.exclude)]
    if args.vs_step:
        try:
            curves = load_curves(args.runs)
            drawn = {name for name, *_ in curves}
            variants = run_variants([run for run in args.runs if run.name in drawn]) if args.by_variant else None
        except UnreadableRecordError as error:
            print(f"error: {error}; fix the file or leave the run out with --exclude", file=sys.stderr)
            return 2
        except ValueError as error:  # a config.json or summary.json that is not what it should be
            print(f"error: {error}", file=sys.stderr)
            return 2
        if not curves:
            print("no runs with evaluation accuracies in metrics.jsonl", file=sys.stderr)
            return 2
        plot_curves(curves, args.out, args.title or "Answer accuracy during training", variants)
        for name, steps, accuracies, _ in curves:
            print(f"{name}: {accuracies[-1]:.3f} at step {steps[-1]} (best {max(accuracies):.3f})")
        return 0
    try:
        points = load_points(args.runs)
        best_cells(points)  # the seeds of every cell must be one setting, checked before anything is drawn
    except UnreadableRecordError as error:
        print(f"error: {error}; fix the file or leave the run out with --exclude", file=sys.stderr)
        return 2
    except ValueError as error:  # MixedSettingsError, or a config.json or summary.json that is not what it should be
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not points:
        print("no runs with final_val_accuracy", file=sys.stderr)
        return 2
    plot(points, args.out, args.title or "Synthetic-task accuracy vs width")
    print(markdown_grid(points))
    if any(p["reached_step"] is not None for p in points):
        print()
        print(markdown_steps_grid(points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
