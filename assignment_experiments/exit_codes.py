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

OK, INTERNAL_OR_DISK_FULL, USER_ERROR, DIVERGED = 0, 1, 2, 3
MODULE = "assignment_experiments.run_experiment"


def command_line(argv: Sequence[str], *extra: str, module: str = MODULE) -> str:
    """The command that re-runs ``argv`` with ``--resume`` (once) and ``extra`` arguments."""
    args = [a for a in argv if a != "--resume"]
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
        hint = ""
        if lr is not None:
            hint = ". To resume from the last good checkpoint with a 10x lower learning rate: " + command_line(
                argv, "--allow-change", f"optim.lr={lr / 10:g}"
            )
        return DIVERGED, f"training stopped: {error}{hint}"
    if isinstance(error, user_error_types()):
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        return USER_ERROR, text if text.startswith(("config error", "error")) else f"error: {text}"
    if isinstance(error, OSError):
        return describe_os_error(error)
    return None
