"""The runner's exit codes and the one line printed for each way a run can end early.

=====  ====================================================================================================
code   meaning
=====  ====================================================================================================
0      done
1      internal error (a traceback: please report it) or the disk is full (one line; checkpoints stay intact)
2      user error: config, usage, missing or malformed data, an unwritable directory, a run held by another
       process, ``--resume`` of a run that does not exist or of other data (one line naming the fix)
3      training diverged (non-finite loss or gradient); the last good checkpoint is kept and the line gives the
       command that resumes it with a lower learning rate
4      ``run_suite --time-limit`` ran out before every run finished: the running runs checkpointed and stopped, the
       rest did not start; the line gives the command that goes on where the suite stopped
130    stopped by SIGINT (Ctrl-C); 143 stopped by SIGTERM. The first signal finishes the step and writes a
       checkpoint; the line gives the command that resumes. A second signal stops at once.
=====  ====================================================================================================
"""

from __future__ import annotations

import errno
import shlex
from collections.abc import Sequence

from assignment_experiments.config import ConfigError
from cs336_basics.fs_checks import NotWritableError, os_error_line
from cs336_basics.training.interrupt import StopNow, TrainingInterrupted, signal_name

OK, INTERNAL_OR_DISK_FULL, USER_ERROR, DIVERGED, TIME_LIMIT = 0, 1, 2, 3, 4
MODULE = "assignment_experiments.run_experiment"


def command_line(argv: Sequence[str], *extra: str, module: str = MODULE) -> str:
    """The command that re-runs ``argv`` with ``--resume`` (once) and ``extra`` arguments; an ``--allow-change``
    in ``extra`` replaces an earlier one for the same key."""
    replaced = {extra[i + 1].partition("=")[0] for i, a in enumerate(extra[:-1]) if a == "--allow-change"}
    args, i = [], 0
    while i < len(argv):
        if argv[i] == "--allow-change" and i + 1 < len(argv) and argv[i + 1].partition("=")[0] in replaced:
            i += 2
            continue
        if argv[i] != "--resume":
            args.append(argv[i])
        i += 1
    return shlex.join(["uv", "run", "python", "-m", module, *args, "--resume", *extra])


def user_error_types() -> tuple[type[BaseException], ...]:
    from assignment_experiments.run_lock import RunLocked
    from assignment_experiments.runner import RunError

    return (ConfigError, RunError, RunLocked, NotWritableError)


def describe_os_error(error: OSError) -> tuple[int, str] | None:
    """Full disk -> 1; unwritable place -> 2; other OS errors are not classified (None: a traceback)."""
    if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return None
    code, line = os_error_line(error)
    if code == INTERNAL_OR_DISK_FULL:
        line += " (rerun with --resume)"
    return code, line


def divergence_advice(error, argv: Sequence[str], lr: float | None) -> str:
    """A command that continues with a 10x lower learning rate.

    Resuming helps only if the newest checkpoint is older than the step before the failure: the checkpoint of the
    step right before it holds the very weights whose loss or gradient was non-finite, and a new learning rate does
    not change those. Then the advice is a fresh run under a new name.
    """
    if lr is None:
        return ""
    lower = f"{lr / 10:g}"
    checkpoint, step = getattr(error, "checkpoint", None), getattr(error, "step", None)
    saved_step = int(checkpoint.stem.split("_")[1]) if checkpoint is not None else None
    if saved_step is not None and step is not None and saved_step < step - 1:
        command = command_line(argv, "--allow-change", f"optim.lr={lower}")
        return f". To resume from step {saved_step} with a 10x lower learning rate: {command}"
    name = getattr(error, "run_name", "run").split("-lr")[0] + f"-lr{lower}"
    args, i = [], 0
    while i < len(argv):
        if argv[i] in ("--name", "--allow-change"):
            i += 2
            continue
        if argv[i] != "--resume" and not argv[i].startswith(("--name=", "--allow-change=")):
            args.append(argv[i])
        i += 1
    command = shlex.join(["uv", "run", "python", "-m", MODULE, *args, "--name", name, "--set", f"optim.lr={lower}"])
    why = "the newest checkpoint holds the weights that diverged" if saved_step is not None else "no checkpoint"
    return f". A resume cannot help ({why}); start again with a 10x lower learning rate: {command}"


def classify(error: BaseException, argv: Sequence[str], lr: float | None = None) -> tuple[int, str] | None:
    """``(exit code, one line)`` for an expected way of ending, or None for a bug (let its traceback show)."""
    from cs336_basics.training.loop import NonFiniteError

    resume = command_line(argv)
    if isinstance(error, TrainingInterrupted):
        if error.checkpoint is None:
            return error.exit_code, f"interrupted by {signal_name(error.signum)} before any checkpoint was written"
        where = f" at step {error.step}" if error.step is not None else ""
        return error.exit_code, (
            f"interrupted by {signal_name(error.signum)}{where}: the run is saved in {error.checkpoint}; "
            f"resume with: {resume}"
        )
    if isinstance(error, StopNow):
        return error.exit_code, f"{error}: stopped at once; the newest complete checkpoint resumes with: {resume}"
    if isinstance(error, KeyboardInterrupt):
        return 130, "interrupted (SIGINT)"
    if isinstance(error, NonFiniteError):
        return DIVERGED, f"training stopped: {error}" + divergence_advice(error, argv, lr)
    if isinstance(error, user_error_types()):
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return USER_ERROR, text if text.startswith(("config error", "error")) else f"error: {text}"
    if isinstance(error, OSError):
        return describe_os_error(error)
    return None


def suite_rerun_line(error: BaseException, argv: Sequence[str]) -> str | None:
    """For a suite stopped by a signal: rerunning the same suite command resumes the interrupted run."""
    if not isinstance(error, TrainingInterrupted | StopNow | KeyboardInterrupt):
        return None
    command = shlex.join(["uv", "run", "python", "-m", "assignment_experiments.run_suite", *argv])
    return f"{error or 'interrupted'}: the suite stopped; rerun it to resume where it was: {command}"
