"""Which runs may be pooled as seeds of one setting: the check behind every seed-pooled table and plot.

The study scripts pool runs into mean +- std: ``plot_accuracy`` by (architecture, length, width, learning rate),
``plot_lr`` by (model, learning rate) within a panel, ``seed_gaps`` and ``plot_scaling`` by name (``X``, ``X_s1``,
...). A glob can catch a run that trained with another step budget or batch size, and a ``--resume`` can change a
run's budget or rate half-way (``config_changes.json``); pooled with the others, such a run makes a mean that
describes no experiment. :func:`check_seeds` compares the runs' :func:`training_setting` and raises
:class:`MixedSettingsError`, a one-line message naming the settings that differ and the runs on each side, for the
script to print before it draws or writes anything.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from assignment_experiments.errors import ConfigError
from assignment_experiments.run_files import read_config_changes, read_json

# settings in which seeds of one setting may differ: the seed itself, prose, reporting, and what changes only the
# speed or where files go, not what is trained or measured
SEED_ONLY_DIFFERENCES = ("train.seed", "train.num_threads", "train.device", "train.compile",
                         "train.activation_checkpointing", "train.checkpoint_every", "train.keep_checkpoints",
                         "train.sample_", "data.cache_dir", "logging.", "description", "baseline")  # fmt: skip
CHANGED_ON_RESUME = "the changes made on --resume"  # a pseudo-setting: config_changes.json, "none" without one
# the settings an error names first when runs differ in several: those that most often tell two experiments apart
FIRST_NAMED = ("optim.lr", "train.max_steps", "train.batch_size", CHANGED_ON_RESUME)
SEED_SUFFIX = re.compile(r"^(?P<stem>.+)_s(?P<seed>\d+)$")  # the suites' naming: X, X_s1, ... are seeds of X
SIGNIFICANT_DIGITS = 12  # floats compare at this precision: 3e-3 / 10 and 3e-4 are one min_lr


class MixedSettingsError(ValueError):
    """Runs pooled as the seeds of one setting differ in another setting."""


def seed_of(name: str) -> tuple[str, int]:
    """``("X", k)`` for a run named ``X_s<k>``, ``(name, 0)`` otherwise."""
    match = SEED_SUFFIX.match(name)
    return (match["stem"], int(match["seed"])) if match else (name, 0)


def change_text(change: dict) -> str:
    """One entry of ``config_changes.json`` as labels and errors show it: ``2000 -> 4000 at step 2,000``."""
    return f"{change['change']} at step {change['step']:,}"


def _rounded(value: Any) -> Any:
    """``value`` with every float rounded to SIGNIFICANT_DIGITS, so that a rate computed as 3e-3 / 10 and one written
    as 3e-4 are the same setting."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def training_setting(run_dir: Path) -> dict | None:
    """What a run trained with, flattened (``{"optim.lr": 0.01, ...}``, every default filled in, floats rounded),
    less the ``SEED_ONLY_DIFFERENCES``, plus what a ``--resume`` changed mid-run; None for a folder without
    ``config.json``. Raises ValueError (UnreadableRecordError for ``config_changes.json``), with a one-line message
    naming the file, when either file cannot be read as what it should be."""
    from assignment_experiments.config import completed_config, flatten_config

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    raw = read_json(path)
    try:
        config = completed_config(raw)
    except ConfigError as error:
        reason = str(error).removeprefix("config error: ")
        raise ValueError(f"{path} is not a run config ({reason}); fix it or leave the run out") from None
    flat = flatten_config(config)
    setting = {key: _rounded(value) for key, value in flat.items() if not key.startswith(SEED_ONLY_DIFFERENCES)}
    changes = [f"{c['key']} {change_text(c)}" for c in read_config_changes(run_dir)]
    return {**setting, CHANGED_ON_RESUME: "; ".join(changes) or "none"}


def check_seeds(what: str, runs: list[tuple[str, dict | None]], fix: str = "pass the runs of one setting") -> None:
    """Raise MixedSettingsError when the ``(run name, training_setting)`` pairs pooled as ``what`` (``"the runs of
    hymba at L=64, d=256, lr 0.00215"``) differ in more than their seed, ending with ``fix``. Runs without a config
    cannot be checked: all of them without one pass, some without one among runs with one is an error."""
    missing = [name for name, setting in runs if setting is None]
    if missing and len(missing) < len(runs):
        raise MixedSettingsError(
            f"{what} cannot be checked as seeds of one setting: {missing[0]} has no config.json; {fix}"
        )
    known = [(name, setting) for name, setting in runs if setting is not None]
    rank = {key: index for index, key in enumerate(FIRST_NAMED)}  # then the others, alphabetically
    for (first, mine), (other, theirs) in ((known[0], run) for run in known[1:]):
        differing = sorted((key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key)),
                           key=lambda key: (rank.get(key, len(rank)), key))  # fmt: skip
        if differing:
            key, others = differing[0], differing[1:]
            more = f"; also {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}" if others else ""
            raise MixedSettingsError(
                f"{what} are not seeds of one setting: they differ in {key} ({first}: {mine.get(key)}, {other}: "
                f"{theirs.get(key)}){more}; {fix}"
            )
