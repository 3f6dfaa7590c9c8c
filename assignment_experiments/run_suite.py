"""Run a suite of experiments (a sweep, an ablation set, an architecture study), one after another or N at a time.

    uv run python -m assignment_experiments.run_suite --suite assignment_experiments/configs/suites/lr_sweep.json
    ... --parallel 8      # eight runs at once: for grids of small models on one GPU (see parallel_runs)
    ... --only lr_1e-3    # just this run of the suite (repeatable)
    ... --time-limit 230m # stop cleanly inside a 4-hour job: checkpoint, exit 4; the same command goes on later

A suite JSON names a base config and a list of runs, each with a ``name`` and ``set`` overrides (and optionally
its own ``config``)::

    {"description": "...", "base": "../cpu_baseline.json",
     "runs": [{"name": "lr_1e-3", "set": {"optim.lr": 1e-3}}, {"name": "lr_3e-3", "set": {"optim.lr": 3e-3}}]}

Config paths are relative to the suite file. Every run's config is validated before the first one starts; finished
runs (``summary.json`` present) are skipped (with a note naming the settings, if the suite now gives it others than it
was trained with), interrupted ones are resumed; a diverging run is recorded and the suite
goes on (a learning-rate sweep is expected to find the edge), and so does a run that cannot start: its line is
printed and its folder left as it was. One whose folder holds another config makes the suite exit 1, as with
``--parallel``; one that another process is training does not, so two processes over one suite share its runs. At
the end the suite's runs are reported (not with ``--only``, which runs a part of the suite: ``report`` compares any
set of runs).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from assignment_experiments.config import ConfigError, ExperimentConfig, load_config
from assignment_experiments.parallel_runs import TimeLimitReached


def load_suite(path: Path, extra_overrides: list[str]) -> list[tuple[str, ExperimentConfig]]:
    """The suite's (name, validated config) pairs."""
    if not path.is_file():
        raise ConfigError(f"config error: suite file {path} does not exist; pass --suite with an existing JSON file")
    suite = json.loads(path.read_text())
    unknown = sorted(set(suite) - {"description", "base", "runs"})
    if unknown or not isinstance(suite.get("runs"), list) or not suite["runs"]:
        raise ConfigError(
            f"config error: suite {path} needs a non-empty 'runs' list (keys: description, base, runs); got {unknown}"
        )
    runs = []
    for index, entry in enumerate(suite["runs"]):
        bad = sorted(set(entry) - {"name", "config", "set"})
        if bad or "name" not in entry:
            raise ConfigError(f"config error: suite run #{index} needs 'name' (optional: 'config', 'set'); got {bad}")
        config_path = entry.get("config", suite.get("base"))
        if config_path is None:
            raise ConfigError(f"config error: suite run {entry['name']!r} has no config and the suite no 'base'")
        overrides = [f"{k}={json.dumps(v)}" for k, v in entry.get("set", {}).items()] + extra_overrides
        try:
            runs.append((entry["name"], load_config(path.parent / config_path, overrides)))
        except ConfigError as error:
            raise ConfigError(f"{error} (suite run {entry['name']!r})") from None
    names = [name for name, _ in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"config error: suite {path} repeats run names; give every run a unique 'name'")
    return runs


def select_runs(runs: list[tuple[str, ExperimentConfig]], only: list[str] | None) -> list[tuple[str, ExperimentConfig]]:
    """The runs named by ``--only`` (in the suite's order), or all of them."""
    if not only:
        return runs
    known = [name for name, _ in runs]
    unknown = [name for name in only if name not in known]
    if unknown:
        raise ConfigError(f"config error: --only {', '.join(unknown)}: no such run in the suite; its runs: {known}")
    return [(name, config) for name, config in runs if name in only]


def parse_duration(text: str) -> float:
    """Seconds in ``3600``, ``90s``, ``45m`` or ``1.5h``."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], units[text[-1]]) if text and text[-1] in units else (text, 1)
    try:
        seconds = float(number) * unit
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(f"a positive duration such as 3600, 90s, 45m or 1.5h, got {text!r}")
    return seconds


def settings_note(run_dir: Path, config: ExperimentConfig) -> str:
    """For a finished run that the suite now describes otherwise (its entry or ``--set`` changed since), what
    differs and how to train the new settings; empty when they agree or the run's config cannot be read."""
    from assignment_experiments.config import resume_conflicts
    from assignment_experiments.resolved_config import resolve_config, resolve_saved_config

    try:
        text = (run_dir / "config.json").read_text()
        vocab = json.loads(text).get("model", {}).get("vocab_size")
        # both sides resolved alike (as --resume does); a setting an older run left null ("the model's default",
        # which configs now write out) is no change either
        changed = [
            change
            for change in resume_conflicts(resolve_saved_config(text, vocab), resolve_config(config, vocab))
            if ": None -> " not in change
        ]
    except (OSError, ValueError, TypeError, AttributeError, ConfigError):
        return ""
    if not changed:
        return ""
    shown = "; ".join(changed[:3]) + (f"; and {len(changed) - 3} more" if len(changed) > 3 else "")
    return (
        f" (note: it was trained with other settings than the suite now gives it: {shown}; to train these, "
        f"move {run_dir} away or give the run a new name)"
    )


def run_suite(
    path: Path,
    runs_dir: Path,
    extra_overrides: list[str],
    only: list[str] | None = None,
    parallel: int = 1,
    time_limit_s: float | None = None,
) -> dict[str, Any]:
    """Run (or skip / resume) the suite's runs, ``parallel`` at a time; returns {name: status}. With
    ``time_limit_s`` every run trains in its own process (as with ``parallel``), so that the limit can stop it with
    a checkpoint; :class:`~assignment_experiments.parallel_runs.TimeLimitReached` says what was left."""
    from assignment_experiments.exit_codes import USER_ERROR, user_error_types
    from assignment_experiments.report import build_report
    from assignment_experiments.run_lock import RunLocked
    from assignment_experiments.runner import run_experiment
    from cs336_basics.training.loop import NonFiniteError

    status: dict[str, Any] = {}
    pending: list[tuple[str, ExperimentConfig]] = []
    for name, config in select_runs(load_suite(path, extra_overrides), only):
        if (runs_dir / name / "summary.json").is_file():
            print(f"[suite] {name}: finished already, skipping{settings_note(runs_dir / name, config)}", flush=True)
            status[name] = "skipped"
        else:
            pending.append((name, config))
    in_children = parallel > 1 or time_limit_s is not None
    if in_children and pending:
        from assignment_experiments.parallel_runs import run_parallel, threads_per_child

        threads = threads_per_child(parallel)
        overrides = {
            name: [*extra_overrides, *([f"train.num_threads={threads}"] if config.train.num_threads == 0 else [])]
            for name, config in pending
        }
        names = [name for name, _ in pending]
        status.update(run_parallel(path, runs_dir, names, overrides, parallel, time_limit_s))
    for name, config in pending if not in_children else []:
        run_dir = runs_dir / name
        if (run_dir / "summary.json").is_file():  # another process over the same suite finished it meanwhile
            print(f"[suite] {name}: finished meanwhile, skipping", flush=True)
            status[name] = "skipped"
            continue
        print(f"[suite] {name}: starting", flush=True)
        try:
            run_experiment(config, name, runs_dir, resume=run_dir.exists())
            status[name] = "done"
        except NonFiniteError as error:
            print(f"[suite] {name}: diverged: {error}", flush=True)
            status[name] = "diverged"
        except RunLocked as error:  # another process is training it: its work, not a failure of this suite
            print(f"[suite] {name}: not run: {error}", flush=True)
            status[name] = "held by another process"
        except user_error_types() as error:  # it cannot start here (its folder holds another config, ...)
            print(f"[suite] {name}: not run: {error}", flush=True)
            status[name] = f"failed (exit {USER_ERROR})"
    finished = [runs_dir / n for n in status if (runs_dir / n / "summary.json").is_file()]
    if finished and not only:
        print(build_report(finished, runs_dir / "report" / path.stem, log_path=None))
    return status


def main(argv: list[str] | None = None) -> int:
    description = __doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m assignment_experiments.run_suite", description=description)
    parser.add_argument("--suite", type=Path, required=True, help="suite JSON (base config + runs with overrides)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent directory of runs (default: runs)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override applied to every run of the suite (repeatable), e.g. --set train.max_steps=50",
    )
    parser.add_argument(
        "--only", action="append", default=None, metavar="NAME", help="run only this run of the suite (repeatable)"
    )
    parser.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="run up to N runs at once, each in its own process (for many small runs on one GPU; on a CPU each "
        "gets cores/N threads unless train.num_threads is set); logs in RUNS_DIR/report/<suite>/logs/",
    )
    parser.add_argument(
        "--time-limit",
        type=parse_duration,
        default=None,
        metavar="DURATION",
        help="stop after this long (3600, 90s, 45m, 1.5h): running runs finish their step and checkpoint, no new "
        "one starts, exit 4; the same command goes on later. For a job with a wall-time limit: leave a step and a "
        "checkpoint of margin. Every run trains in its own process, as with --parallel",
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error(f"--parallel must be at least 1, got {args.parallel}")
    try:
        status = run_suite(args.suite, args.runs_dir, args.overrides, args.only, args.parallel, args.time_limit)
    except TimeLimitReached as error:
        from assignment_experiments.exit_codes import TIME_LIMIT

        command = shlex.join(["uv", "run", "python", "-m", "assignment_experiments.run_suite", *argv])
        print(f"{error}; to go on where it stopped, rerun: {command}", file=sys.stderr)
        return TIME_LIMIT
    except BaseException as error:  # noqa: BLE001 - classified below; anything unexpected is re-raised
        from assignment_experiments.exit_codes import classify, suite_rerun_line

        outcome = classify(error, argv)
        if outcome is None:
            raise
        print(suite_rerun_line(error, argv) or outcome[1], file=sys.stderr)
        return outcome[0]
    return exit_code(status)


def exit_code(status: dict[str, Any]) -> int:
    """0 when every run finished; 3 when one diverged; 1 when one failed or could not start (with --parallel: see
    its log)."""
    values = [str(v) for v in status.values()]
    if any(v.startswith("failed") for v in values):
        return 1
    return 3 if "diverged" in values else 0


if __name__ == "__main__":
    sys.exit(main())
