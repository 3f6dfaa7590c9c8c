"""Command line: train one configured experiment into ``runs/<name>/``.

    uv run python -m assignment_experiments.run_experiment --config assignment_experiments/configs/quickstart.json
    uv run python -m assignment_experiments.run_experiment --config ... --print-config   # resolved config, no run
    torchrun --nproc_per_node=2 -m assignment_experiments.run_experiment --config ...   # DDP

Exit codes (see ``assignment_experiments.exit_codes``): 0 done; 1 internal error or full disk; 2 config / usage /
data error, a run held by another process, ``--resume`` of a missing run (one line, nothing written); 3 training
diverged (the last good checkpoint is kept; the line gives the resume command with a lower lr); 130 / 143 stopped by
SIGINT / SIGTERM after writing a checkpoint (the line gives the resume command).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from assignment_experiments.config import ConfigError, load_config

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "quickstart.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m assignment_experiments.run_experiment",
        description="Train a language model from a JSON experiment config.",
    )
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="experiment config JSON (default: the quickstart config)"
    )
    parser.add_argument("--name", default=None, help="run name; the run goes to RUNS_DIR/NAME (default: config stem)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value, type-checked (repeatable), e.g. --set optim.lr=3e-4",
    )
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="parent directory of runs (default: runs)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run NAME from its latest complete checkpoint"
    )
    parser.add_argument(
        "--allow-change",
        dest="allow_changes",
        action="append",
        default=[],
        metavar="optim.KEY=VALUE",
        help="with --resume: set an optimizer value that differs from the checkpoint's config (e.g. a lower "
        "optim.lr after divergence); recorded in the run's config_changes.json (repeatable)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved config (every default filled in) as JSON and exit without training; "
        "model.vocab_size stays null until the data is prepared",
    )
    return parser.parse_args(argv)


def _run(args: argparse.Namespace) -> None:
    from assignment_experiments.resume import split_allowed_changes

    if args.allow_changes and not args.resume:
        raise ConfigError("config error: --allow-change only applies with --resume; use --set for a new run")
    overrides, allowed = split_allowed_changes(args.allow_changes)
    config = load_config(args.config, args.overrides + overrides)
    if args.print_config:
        import json

        from assignment_experiments.resolved_config import resolve_config

        print(json.dumps(resolve_config(config).to_dict(), indent=2))
        return
    from assignment_experiments.runner import run_experiment
    from cs336_basics.training.loop import NonFiniteError

    try:
        run_experiment(config, args.name or args.config.stem, args.runs_dir, resume=args.resume, allow_changes=allowed)
    except NonFiniteError as error:
        error.lr = config.optim.lr  # the advice suggests a tenth of it
        raise


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from cs336_basics.training.interrupt import StopSignals

    try:
        with StopSignals():  # a signal while torch is still importing is one line too, not a traceback
            _run(args)
    except BaseException as error:  # noqa: BLE001 - classified below; anything unexpected is re-raised
        from assignment_experiments.exit_codes import classify

        lr = getattr(error, "lr", None)
        outcome = classify(error, argv, lr=lr)
        if outcome is None:
            raise
        print(outcome[1], file=sys.stderr)
        return outcome[0]
    return 0


if __name__ == "__main__":
    sys.exit(main())
