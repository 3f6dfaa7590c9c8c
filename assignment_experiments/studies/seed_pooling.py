"""Which runs may be pooled as seeds of one setting: the check behind every seed-pooled table and plot.

The study scripts pool runs into mean +- std: ``plot_accuracy`` by (architecture, length, width, learning rate),
``seed_gaps`` and ``plot_scaling`` by name (``X``, ``X_s1``, ...). A glob can catch a run that trained with another
step budget or batch size, and a ``--resume`` can change a run's budget or rate half-way (``config_changes.json``);
pooled with the others, such a run makes a mean that describes no experiment. :func:`check_seeds` compares the runs'
:func:`training_setting` and raises :class:`MixedSettingsError`, a one-line message naming the first setting that
differs and the runs on each side, for the script to print before it draws or writes anything.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

from assignment_experiments.run_files import read_config_changes

# settings in which seeds of one setting may differ: the seed itself, prose, reporting, and what changes only the
# speed or the files a run keeps, not what it trains
SEED_ONLY_DIFFERENCES = ("train.seed", "train.num_threads", "train.device", "train.compile",
                         "train.activation_checkpointing", "train.checkpoint_every", "train.keep_checkpoints",
                         "train.sample_", "logging.", "description", "baseline")  # fmt: skip
CHANGED_ON_RESUME = "the changes made on --resume"  # a pseudo-setting: config_changes.json, "none" without one
SEED_SUFFIX = re.compile(r"^(?P<stem>.+)_s(?P<seed>\d+)$")  # the suites' naming: X, X_s1, ... are seeds of X


class MixedSettingsError(ValueError):
    """Runs pooled as the seeds of one setting differ in another setting."""


def seed_of(name: str) -> tuple[str, int]:
    """``("X", k)`` for a run named ``X_s<k>``, ``(name, 0)`` otherwise."""
    match = SEED_SUFFIX.match(name)
    return (match["stem"], int(match["seed"])) if match else (name, 0)


def change_text(change: dict) -> str:
    """One entry of ``config_changes.json`` as labels and errors show it: ``2000 -> 4000 at step 2,000``."""
    return f"{change['change']} at step {change['step']:,}"


def training_setting(run_dir: Path) -> dict | None:
    """What a run trained with, flattened (``{"optim.lr": 0.01, ...}``, every default filled in), less the
    ``SEED_ONLY_DIFFERENCES``, plus what a ``--resume`` changed mid-run; None for a folder without ``config.json``.
    Raises UnreadableRecordError for a damaged ``config_changes.json``, ValueError for a damaged ``config.json``."""
    from assignment_experiments.config import flatten_config
    from assignment_experiments.report import typed_config

    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        problem = f"{path} is not valid JSON ({error.msg}, line {error.lineno})"
        raise ValueError(f"{problem}; fix it or leave the run out") from None
    with warnings.catch_warnings():  # a setting the architecture does not read: the report's concern, not a pool's
        warnings.simplefilter("ignore")
        flat = flatten_config(typed_config(config) or config)
    setting = {key: value for key, value in flat.items() if not key.startswith(SEED_ONLY_DIFFERENCES)}
    changes = [f"{c['key']} {change_text(c)}" for c in read_config_changes(run_dir)]
    return {**setting, CHANGED_ON_RESUME: "; ".join(changes) or "none"}


def check_seeds(what: str, runs: list[tuple[str, dict | None]], fix: str = "pass the runs of one setting") -> None:
    """Raise MixedSettingsError when the ``(run name, training_setting)`` pairs pooled as ``what`` (``"the runs of
    hymba at L=64, d=256, lr 0.00215"``) differ in more than their seed, ending with ``fix``; runs without a config
    are not compared."""
    known = [(name, setting) for name, setting in runs if setting is not None]
    for (first, mine), (other, theirs) in ((known[0], run) for run in known[1:]):
        differing = sorted(key for key in mine.keys() | theirs.keys() if mine.get(key) != theirs.get(key))
        if differing:
            key, more = differing[0], ", and more" if len(differing) > 1 else ""
            raise MixedSettingsError(
                f"{what} are not seeds of one setting: they differ in {key} ({first}: {mine.get(key)}, {other}: "
                f"{theirs.get(key)}{more}); {fix}"
            )
