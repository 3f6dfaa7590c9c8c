"""Run a suite's runs as up to N child processes at once (``run_suite --parallel N``).

Why: a small model leaves a GPU mostly idle, waiting for one Python process to launch its kernels (a two-layer
width-64 MQAR step is a few hundred tiny kernels); several runs side by side give the card work from several
launchers at once. On a CPU the runs share the cores, so each child gets ``cores // N`` threads unless the suite or
``--set train.num_threads=...`` says otherwise.

Each child is ``run_suite --suite S --only NAME`` in its own process session: a Ctrl-C in the terminal reaches only
this parent, which passes each signal on to every child once, so a first signal still means "finish the step, write
a checkpoint" and a second "stop now", exactly as for one run. A child's output goes to
``RUNS_DIR/report/<suite>/logs/<name>.log``; this process prints a line when a run starts and when it ends. A parent
killed outright (SIGKILL, which cannot be passed on) leaves its running children to finish their runs on their own.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from assignment_experiments.exit_codes import DIVERGED
from cs336_basics.training.interrupt import TrainingInterrupted

POLL_S = 0.5
clock = time.monotonic  # what --time-limit is measured with (a test replaces it)


@dataclass
class Child:
    """A running run (keyed by its name in ``run_parallel``): its process, its open log and when it started."""

    process: subprocess.Popen
    log: IO[str]
    log_path: Path
    started: float = field(default_factory=time.perf_counter)


def threads_per_child(jobs: int, cpu_count: int | None = None) -> int:
    """Threads each of ``jobs`` concurrent CPU runs gets so that together they use the cores once."""
    return max(1, (cpu_count or os.cpu_count() or 1) // jobs)


def child_command(suite: Path, runs_dir: Path, name: str, overrides: Sequence[str]) -> list[str]:
    args = [sys.executable, "-m", "assignment_experiments.run_suite", "--suite", str(suite)]
    args += ["--runs-dir", str(runs_dir), "--only", name]
    for override in overrides:
        args += ["--set", override]
    return args


def outcome(returncode: int) -> str:
    """A child's exit code as a suite status (the codes of :mod:`assignment_experiments.exit_codes`)."""
    if returncode == 0:
        return "done"
    if returncode == DIVERGED:
        return "diverged"
    if returncode > 128 or returncode < 0:  # 128 + signal from the runner, or -signal when killed outright
        return "interrupted"
    return f"failed (exit {returncode})"


def summary_line(run_dir: Path) -> str:
    """The finished run's final validation loss (and accuracy where it has one), for the end-of-run line."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return ""
    parts = []
    if isinstance(summary.get("final_val_loss"), int | float):
        parts.append(f"final val loss {summary['final_val_loss']:.4f}")
    if isinstance(summary.get("final_val_accuracy"), int | float):
        parts.append(f"accuracy {summary['final_val_accuracy']:.3f}")
    return ", ".join(parts)


@contextlib.contextmanager
def forwarded_signals(children: dict[str, Child], received: list[int]) -> Iterator[None]:
    """While active, SIGINT / SIGTERM to this process are recorded and sent on to every running child."""

    def handler(signum: int, _frame: Any) -> None:
        received.append(signum)
        print(f"[suite] {signal.Signals(signum).name}: passed on to {len(children)} running run(s)", flush=True)
        for child in children.values():
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class TimeLimitReached(Exception):
    """``run_suite --time-limit`` ran out: the running runs were stopped (each with a checkpoint of its last step,
    unless it was still starting up), the rest not started. ``status`` is every run's status in this call."""

    def __init__(self, limit_s: float, status: dict[str, str]) -> None:
        self.limit_s, self.status = limit_s, status
        values = list(status.values())
        parts = [f"{values.count('done')} run(s) finished this time", f"{values.count('interrupted')} stopped",
                 f"{values.count('not started')} not started"]  # fmt: skip
        failed = [name for name, v in status.items() if v == "diverged" or v.startswith("failed")]
        if failed:  # the exit code says "time limit", so the line must not hide these
            parts.append(f"{len(failed)} diverged or failed ({', '.join(failed)}: see their logs)")
        super().__init__(f"time limit of {format_duration(limit_s)} reached: " + ", ".join(parts))


def format_duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
    )


def run_parallel(
    suite: Path,
    runs_dir: Path,
    names: Sequence[str],
    overrides: dict[str, list[str]],
    jobs: int,
    time_limit_s: float | None = None,
) -> dict[str, str]:
    """Run ``names`` (runs of ``suite`` not finished yet, in order) at most ``jobs`` at a time, each with its
    ``--set`` ``overrides[name]``; returns {name: status}.

    After the first signal no new run starts; the running ones checkpoint and stop, and their status is
    ``interrupted`` (rerunning the same command resumes them). ``time_limit_s`` does the same on its own once that
    many seconds have passed (it sends each running run one SIGTERM) and then raises :class:`TimeLimitReached`; a
    signal after that is the runs' second and stops them at once, without a checkpoint."""
    log_dir = runs_dir / "report" / suite.stem / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    waiting, children, status, received = list(names), {}, {}, []
    total = len(waiting)
    deadline = None if time_limit_s is None else clock() + time_limit_s
    timed_out = False
    with forwarded_signals(children, received):
        while waiting or children:
            if deadline is not None and not timed_out and not received and clock() >= deadline:
                timed_out = True
                print(
                    f"[suite] time limit of {format_duration(time_limit_s)} reached: {len(children)} running run(s) "
                    "finish their step and write a checkpoint; no new run starts",
                    flush=True,
                )
                for child in children.values():
                    with contextlib.suppress(ProcessLookupError):
                        child.process.send_signal(signal.SIGTERM)
            while waiting and len(children) < jobs and not received and not timed_out:
                name = waiting.pop(0)
                log_path = log_dir / f"{name}.log"
                log = log_path.open("a")  # a resumed run's log continues the interrupted one's
                log.write(f"[suite] {datetime.datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}: starting {name}\n")
                log.flush()
                process = subprocess.Popen(
                    child_command(suite, runs_dir, name, overrides[name]),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # the terminal's Ctrl-C reaches only this parent, which forwards it once
                )
                children[name] = Child(process, log, log_path)
                print(f"[suite] {name}: started ({len(children)} running; log {log_path})", flush=True)
            if (received or timed_out) and waiting:
                for name in waiting:
                    status[name] = "not started"
                waiting.clear()
            time.sleep(POLL_S)
            for name, child in list(children.items()):
                returncode = child.process.poll()
                if returncode is None:
                    continue
                child.log.close()
                del children[name]
                # a run that wrote its summary and was then stopped on its way out (a signal, the time limit) is done
                finished = (runs_dir / name / "summary.json").is_file()
                status[name] = "done" if finished and outcome(returncode) == "interrupted" else outcome(returncode)
                minutes = (time.perf_counter() - child.started) / 60
                result = summary_line(runs_dir / name) if status[name] == "done" else f"see {child.log_path}"
                done = sum(s == "done" for s in status.values())
                print(
                    f"[suite] {name}: {status[name]} after {minutes:.1f} min"
                    + (f" ({result})" if result else "")
                    + f" | {done}/{total} done, {len(children)} running, {len(waiting)} waiting",
                    flush=True,
                )
    if received:  # the caller prints the line that resumes the suite, and exits 128 + signal
        raise TrainingInterrupted(received[0])
    if timed_out and any(v in ("interrupted", "not started") for v in status.values()):
        raise TimeLimitReached(time_limit_s, status)
    return status
