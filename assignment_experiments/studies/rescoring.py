"""The command line shared by studies that re-score finished runs on their validation windows."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def rescoring_parser(name: str, runs_help: str = "finished run directories") -> argparse.ArgumentParser:
    """``runs``, ``--max-tokens``, ``--batch``, ``--num-threads`` and ``--out-dir``; the study adds its own options."""
    parser = argparse.ArgumentParser(prog=f"python -m assignment_experiments.studies.{name}")
    parser.add_argument("runs", nargs="+", type=Path, help=runs_help)
    parser.add_argument("--max-tokens", type=int, default=20480, help="validation tokens scored (per window length)")
    parser.add_argument("--batch", type=int, default=8, help="windows per forward pass")
    parser.add_argument("--num-threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--out-dir", type=Path, required=True, help="where the .json/.md results (and plots) go")
    return parser


def parse_rescoring_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, set torch's thread count and create ``--out-dir``."""
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return args
