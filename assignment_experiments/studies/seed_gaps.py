"""Seed-pooled comparison of runs under the log's noise rule: which gaps are real, which provisional.

    uv run python -m assignment_experiments.studies.seed_gaps results/runs/mqarzr_mamba_d128_drop_b999* \
        results/runs/mqarzr_mamba_outnorm_d128_drop_b999* --vs mqarzr_mamba_d128_drop_b999

Runs named ``X``, ``X_s1``, ``X_s2``, ... are seeds of one setting ``X`` (the suites' naming, which
``tests/test_config.py`` enforces: a ``_s<k>`` run differs from ``X`` only in its seed). For each setting the table
gives every seed's value of the metric (``final_val_accuracy`` for synthetic tasks, else ``final_val_loss``, or
``--metric``), their mean and sample standard deviation. For each compared pair it gives the gap of the means and
twice the pooled standard deviation, ``2 * sqrt(((n_a - 1) s_a^2 + (n_b - 1) s_b^2) / (n_a + n_b - 2))``, and the
verdict of ``EXPERIMENT_LOG.md``'s rule: a gap is **real** when it exceeds twice the pooled standard deviation and
both settings have at least three seeds; **provisional** when it exceeds it on fewer seeds; **within noise**
otherwise. A setting with one seed has no spread; a pair with one seed on both sides has no pooled spread and is
provisional whatever its gap.

``--vs NAME`` compares every setting with ``NAME`` only; without it every pair is compared.

``--above T`` also counts, per setting, the seeds whose value is above ``T`` (say 0.5 accuracy: the run recalls) and
gives each pair's two-sided Fisher exact p-value for those counts. Where the seeds split into runs that learned the
task and runs that did not, the mean and standard deviation describe a two-valued outcome badly, and the counts say
more (a p-value, not part of the log's rule, and from few seeds: read it as a description).
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from assignment_experiments.run_files import read_json
from assignment_experiments.studies.seed_pooling import check_seeds, seed_of, training_setting

MIN_SEEDS = 3  # the log's rule: a gap is real only over at least three seeds per side


@dataclass
class Setting:
    """The seeds of one setting: run names and their metric values, in seed order."""

    name: str
    runs: list[str]
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    def above(self, threshold: float) -> int:
        return sum(v > threshold for v in self.values)


@dataclass
class Gap:
    """Setting ``b`` minus setting ``a``, against twice their pooled seed standard deviation."""

    a: Setting
    b: Setting
    difference: float
    twice_pooled_std: float | None
    verdict: str


def fisher_exact(hits_a: int, n_a: int, hits_b: int, n_b: int) -> float:
    """Two-sided Fisher exact p-value of the 2x2 table (hits, misses) x (a, b): the probability, with the margins
    fixed, of a table at most as likely as the one observed."""
    hits, total = hits_a + hits_b, n_a + n_b

    def probability(k: int) -> float:  # k of the hits in a (hypergeometric)
        return math.comb(n_a, k) * math.comb(n_b, hits - k) / math.comb(total, hits)

    observed = probability(hits_a)
    tables = range(max(0, hits - n_b), min(hits, n_a) + 1)
    return min(1.0, sum(p for k in tables if (p := probability(k)) <= observed * (1 + 1e-7)))


def metric_of(summary: dict, metric: str | None) -> tuple[str, float]:
    """The metric's name and value in one run's summary (the accuracy of a synthetic task, else the loss)."""
    name = metric or ("final_val_accuracy" if summary.get("final_val_accuracy") is not None else "final_val_loss")
    value = summary.get(name)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{summary.get('name', '?')}: summary.json has no finite {name!r}")
    return name, float(value)


def load_settings(run_dirs: list[Path], metric: str | None = None) -> tuple[str, dict[str, Setting]]:
    """Group the runs into settings by name stem; every run must report the same metric, and the runs of one stem
    must differ only in their seed (seed_pooling.check_seeds: a run whose budget a resume extended is not a seed)."""
    seeds: dict[str, list[tuple[int, str, float]]] = {}
    setting: dict[str, dict | None] = {}
    names: set[str] = set()
    for run in run_dirs:
        summary_path = run / "summary.json"
        if not summary_path.is_file():
            raise ValueError(f"{run}: no summary.json (not a finished run folder)")
        summary = read_json(summary_path)
        name, value = metric_of(summary, metric)
        names.add(name)
        stem, seed = seed_of(run.name)
        seeds.setdefault(stem, []).append((seed, run.name, value))
        setting[run.name] = training_setting(run)
    if len(names) > 1:
        raise ValueError(f"the runs report different metrics ({', '.join(sorted(names))}): pass --metric")
    settings = {}
    for stem, entries in seeds.items():
        entries.sort()
        duplicates = [seed for seed, group in itertools.groupby(entries, key=lambda e: e[0]) if len(list(group)) > 1]
        if duplicates:
            raise ValueError(f"{stem}: seed {duplicates[0]} appears twice (the same run given from two folders?)")
        check_seeds(f"the runs pooled as {stem}", [(e[1], setting[e[1]]) for e in entries])
        settings[stem] = Setting(stem, [e[1] for e in entries], [e[2] for e in entries])
    return names.pop(), settings


def compare(a: Setting, b: Setting) -> Gap:
    """``b - a`` and the noise rule's verdict."""
    difference = b.mean - a.mean
    degrees = len(a.values) + len(b.values) - 2
    if degrees == 0:
        return Gap(a, b, difference, None, "provisional")
    pooled = math.sqrt(
        ((len(a.values) - 1) * (a.std or 0.0) ** 2 + (len(b.values) - 1) * (b.std or 0.0) ** 2) / degrees
    )
    if abs(difference) <= 2 * pooled:
        verdict = "within noise"
    else:
        verdict = "real" if min(len(a.values), len(b.values)) >= MIN_SEEDS else "provisional"
    return Gap(a, b, difference, 2 * pooled, verdict)


def gaps(settings: dict[str, Setting], versus: str | None = None) -> list[Gap]:
    if versus is not None:
        if versus not in settings:
            raise ValueError(f"--vs {versus!r} is none of the settings given: {', '.join(sorted(settings))}")
        return [compare(settings[versus], s) for name, s in settings.items() if name != versus]
    return [compare(a, b) for a, b in itertools.combinations(settings.values(), 2)]


def markdown(metric: str, settings: dict[str, Setting], pairs: list[Gap], above: float | None = None) -> str:
    count = f" | seeds above {above:g}" if above is not None else ""
    lines = [f"| setting | seeds | {metric} per seed | mean ± std{count} |", "| --- " * (5 if count else 4) + "|"]
    for s in settings.values():
        spread = f" ± {s.std:.3f}" if s.std is not None else ""
        values = " / ".join(f"{v:.3f}" for v in s.values)
        hits = f" | {s.above(above)} of {len(s.values)}" if above is not None else ""
        lines.append(f"| {s.name} | {len(s.values)} | {values} | {s.mean:.3f}{spread}{hits} |")
    fisher = " | Fisher p (seeds above)" if above is not None else ""
    lines += ["", f"| b | a | b - a | 2 x pooled std | verdict{fisher} |", "| --- " * (6 if fisher else 5) + "|"]
    for g in pairs:
        twice = f"{g.twice_pooled_std:.3f}" if g.twice_pooled_std is not None else "n/a (one seed each)"
        p = ""
        if above is not None:
            p = f" | {fisher_exact(g.a.above(above), len(g.a.values), g.b.above(above), len(g.b.values)):.3f}"
        lines.append(f"| {g.b.name} | {g.a.name} | {g.difference:+.3f} | {twice} | {g.verdict}{p} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.studies.seed_gaps", description=__doc__.splitlines()[0]
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders; NAME and NAME_s<k> pool as seeds of NAME")
    parser.add_argument("--metric", default=None,
                        help="summary.json field (default: final_val_accuracy where the runs have it, else "
                        "final_val_loss)")  # fmt: skip
    parser.add_argument("--vs", default=None, metavar="NAME", help="compare every setting with this one only")
    parser.add_argument("--above", type=float, default=None, metavar="T",
                        help="also count the seeds above T per setting, with a Fisher p-value per pair")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None, help="also write the tables to this Markdown file")
    args = parser.parse_args(argv)
    try:
        metric, settings = load_settings(args.runs, args.metric)
        text = markdown(metric, settings, gaps(settings, args.vs), args.above)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
