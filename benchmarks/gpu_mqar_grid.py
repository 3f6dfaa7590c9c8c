"""As much of a GPU MQAR grid as a short lease allows, in one command, packed into files a lease can return.

    PYTHONPATH=. python benchmarks/gpu_mqar_grid.py --out gpu_mqar --time-limit 8m        # on a CUDA machine
    PYTHONPATH=. python benchmarks/gpu_mqar_grid.py --out /tmp/x --smoke                   # 2 tiny runs on CPU (CI)

Runs ``run_suite`` on the suite (default ``configs/suites/mqar_zoology_gpu.json``, Zoology's published grid; also
``mqar_zoology_gpu_ssm.json``) with bf16 autocast, ``--parallel`` runs side by side and ``--time-limit``, so the
runs still training when the time is up write a checkpoint and stop. The run folders live outside ``OUT`` (a lease
returns a few files, not a tree); ``OUT`` gets four files:

- ``mqar_grid_runs.tar.gz``: the folders of the runs that finished, without checkpoints (``config.json``,
  ``metrics.jsonl``, ``summary.json``, ...): ``tar xzf OUT/mqar_grid_runs.tar.gz -C results/runs`` adds them to the
  log's runs;
- ``mqar_grid_logs.tar.gz``: every run's own log (``logs/NAME.log``) and the folders of the runs that did not
  finish, without checkpoints (``unfinished/NAME/``: their learning curves up to the stop);
- ``mqar_grid.md``: one row per run of the suite: finished (steps, the step the target accuracy was reached, final
  accuracy, minutes), stopped at the time limit, diverged, failed, or not started;
- ``mqar_grid.log``: ``run_suite``'s own output.

``--finished-in DIR`` (e.g. ``results/runs``) copies the suite's runs that are already finished there into the
runs folder first, so ``run_suite`` skips them, and a later lease goes on with the runs left. Checkpoints do not come
back (a lease returns a few files of at most 16 MiB), so a run stopped at the limit starts again from scratch in
the next lease, and a run that needs longer than one lease never finishes this way: give it a longer lease, or a
lower ``train.max_steps`` in its suite. ``--smoke`` trains in a folder of its own, so its 3-step runs are never
taken for the grid's. It needs no ``uv`` and no network: plain ``python`` with the repository on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITES = ROOT / "assignment_experiments" / "configs" / "suites"
SMOKE_SETS = ["train.device=cpu", "train.max_steps=3", "train.eval_every=1", "train.batch_size=4",
              "train.checkpoint_every=2", "data.final_eval_max_tokens=512", "train.num_threads=1"]  # fmt: skip


def checked_duration(text: str) -> str:
    """``text`` as given, once ``run_suite`` would accept it (a usage error here, before anything trains)."""
    from assignment_experiments.run_suite import parse_duration

    parse_duration(text)
    return text


def suite_names(suite: Path) -> list[str]:
    return [run["name"] for run in json.loads(suite.read_text())["runs"]]


def copy_finished(names: list[str], source: Path, runs_dir: Path) -> int:
    """Copy the runs of ``names`` that are finished in ``source`` (``summary.json`` present) into ``runs_dir``."""
    copied = 0
    for name in names:
        if (source / name / "summary.json").is_file() and not (runs_dir / name).exists():
            shutil.copytree(source / name, runs_dir / name, ignore=shutil.ignore_patterns("checkpoints", "*.pt"))
            copied += 1
    return copied


def _without_checkpoints(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "checkpoints" in Path(info.name).parts or info.name.endswith((".pt", ".lock")) else info


def pack(names: list[str], runs_dir: Path, suite: str, out: Path) -> tuple[int, int]:
    """Write ``mqar_grid_runs.tar.gz`` (finished runs) and ``mqar_grid_logs.tar.gz`` (every run's log, unfinished
    runs under ``unfinished/``), both without checkpoints; returns (finished, unfinished) run counts."""
    finished = [n for n in names if (runs_dir / n / "summary.json").is_file()]
    unfinished = [n for n in names if (runs_dir / n).is_dir() and n not in finished]
    with tarfile.open(out / "mqar_grid_runs.tar.gz", "w:gz") as tar:
        for name in finished:
            tar.add(runs_dir / name, arcname=name, filter=_without_checkpoints)
    logs = runs_dir / "report" / suite / "logs"
    with tarfile.open(out / "mqar_grid_logs.tar.gz", "w:gz") as tar:
        for name in names:
            if (logs / f"{name}.log").is_file():
                tar.add(logs / f"{name}.log", arcname=f"logs/{name}.log")
        for name in unfinished:
            tar.add(runs_dir / name, arcname=f"unfinished/{name}", filter=_without_checkpoints)
    return len(finished), len(unfinished)


SUITE_STATUS = re.compile(r"^\[suite\] (?P<name>\S+): (?P<status>diverged|interrupted|failed \(exit \d+\)) after", re.M)


def table(names: list[str], runs_dir: Path, suite_output: str = "") -> str:
    """One row per run; an unfinished run's state comes from ``run_suite``'s output (``suite_output``)."""
    ended = {m["name"]: m["status"] for m in SUITE_STATUS.finditer(suite_output)}
    lines = ["| run | state | steps | target reached at | final accuracy | minutes |", "|---|---|---|---|---|---|"]
    for name in names:
        summary_path = runs_dir / name / "summary.json"
        if summary_path.is_file():
            s = json.loads(summary_path.read_text())
            reached, accuracy = s.get("target_reached_step"), s.get("final_val_accuracy")
            cells = [
                str(s.get("steps")),
                str(reached) if reached is not None else "-",
                f"{accuracy:.3f}" if isinstance(accuracy, int | float) else "-",
                f"{s['runtime_s'] / 60:.1f}" if isinstance(s.get("runtime_s"), int | float) else "-",
            ]
            lines.append(f"| {name} | finished | " + " | ".join(cells) + " |")
            continue
        status = ended.get(name)
        if not (runs_dir / name).is_dir() and status is None:
            state = "not started"
        elif status in (None, "interrupted"):
            state = "stopped at the time limit"
        else:
            state = f"{status}: see logs/{name}.log"
        lines.append(f"| {name} | {state} | - | - | - | - |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/gpu_mqar_grid.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the three result files")
    parser.add_argument("--suite", type=Path, default=SUITES / "mqar_zoology_gpu.json", help="the grid's suite JSON")
    parser.add_argument("--time-limit", default="8m", type=checked_duration,
                        help="run_suite --time-limit (default: %(default)s)")  # fmt: skip
    parser.add_argument("--parallel", type=int, default=8, help="runs side by side on the GPU (default: 8)")
    parser.add_argument("--runs-dir", type=Path, default=None,
                        help="where the runs train, outside --out (default: /tmp/mqar_grid_runs, or "
                        "/tmp/mqar_grid_runs_smoke with --smoke)")  # fmt: skip
    parser.add_argument("--finished-in", type=Path, default=None, metavar="DIR",
                        help="skip the suite's runs already finished in DIR (e.g. results/runs)")  # fmt: skip
    parser.add_argument("--only", action="append", default=None, metavar="NAME", help="only this run (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="the suite's first two runs, 3 tiny steps each, on CPU")
    args = parser.parse_args(argv)
    if args.runs_dir is None:
        args.runs_dir = Path("/tmp/mqar_grid_runs_smoke" if args.smoke else "/tmp/mqar_grid_runs")
    # run_suite trains from the repository root: every path the caller gave is made absolute first
    args.out, args.suite, args.runs_dir = args.out.resolve(), args.suite.resolve(), args.runs_dir.resolve()
    if args.finished_in is not None:
        args.finished_in = args.finished_in.resolve()
    if not args.suite.is_file():
        parser.error(f"--suite {args.suite} does not exist")
    names = suite_names(args.suite)
    only = args.only or (names[:2] if args.smoke else None)
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            parser.error(f"--only {', '.join(unknown)}: not in {args.suite.name}")
        names = [n for n in names if n in only]
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    if args.finished_in is not None:
        print(f"{copy_finished(names, args.finished_in, args.runs_dir)} run(s) already finished in {args.finished_in}")
    sets = SMOKE_SETS if args.smoke else ["train.precision=bf16"]
    command = [sys.executable, "-m", "assignment_experiments.run_suite", "--suite", str(args.suite), "--runs-dir",
               str(args.runs_dir), "--parallel", str(args.parallel), "--time-limit", args.time_limit]  # fmt: skip
    for override in sets:
        command += ["--set", override]
    for name in only or []:
        command += ["--only", name]
    print("$ " + " ".join(command), flush=True)
    with (args.out / "mqar_grid.log").open("w") as log:
        returncode = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    finished, unfinished = pack(names, args.runs_dir, args.suite.stem, args.out)
    rows = table(names, args.runs_dir, (args.out / "mqar_grid.log").read_text())
    (args.out / "mqar_grid.md").write_text(
        f"# {args.suite.name}: run_suite exit {returncode} (0 all done, 4 time limit)\n\n" + rows
    )
    print(f"run_suite exit {returncode}; {finished} finished and {unfinished} unfinished run(s) packed; "
          f"see {args.out / 'mqar_grid.md'}")  # fmt: skip
    return returncode


if __name__ == "__main__":
    sys.exit(main())
