"""Command line: train one configured experiment into ``runs/<name>/``.

    uv run python -m assignment_experiments.run_experiment --config assignment_experiments/configs/quickstart.json
    uv run python -m assignment_experiments.run_experiment --config ... --print-config   # resolved config, no run
    torchrun --nproc_per_node=2 -m assignment_experiments.run_experiment --config ...   # DDP

Exit codes: 0 done, 2 config / usage error (one line, nothing written), 3 training diverged (non-finite loss or
gradient; the last good checkpoint is kept).
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
        "--print-config",
        action="store_true",
        help="print the fully resolved config (every default filled in) as JSON and exit without training; "
        "model.vocab_size stays null until the data is prepared",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        if args.print_config:
            import json

            from assignment_experiments.resolved_config import resolve_config

            print(json.dumps(resolve_config(config).to_dict(), indent=2))
            return 0
        from assignment_experiments.runner import RunError, run_experiment
        from cs336_basics.training.loop import NonFiniteError

        name = args.name or args.config.stem
        try:
            run_experiment(config, name, args.runs_dir, resume=args.resume)
        except RunError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except NonFiniteError as error:
            print(f"training stopped: {error}", file=sys.stderr)
            return 3
    except ConfigError as error:  # includes missing data files, found while preparing the data
        print(str(error), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
