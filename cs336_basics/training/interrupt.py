"""Stop a training run cleanly on SIGTERM / SIGINT (what job schedulers send on preemption, and Ctrl-C).

How it behaves, inside ``with StopSignals() as signals:``:

- While ``signals.deferred()`` is active (the training loop), the first SIGTERM or SIGINT only *records* the request
  and prints one line. The loop polls :meth:`StopSignals.requested` after each optimizer step; the trainer then
  finishes the step, writes a checkpoint and raises :class:`TrainingInterrupted` carrying the step and the file.
- Outside the deferred window (data preparation, the final evaluation) there is no step to finish: the signal raises
  :class:`TrainingInterrupted` at once, and the newest complete checkpoint (if any) is what a resume uses.
- A second signal raises :class:`StopNow` at once (a ``BaseException``, so no ``except Exception`` swallows it): a
  second Ctrl-C never waits for a step. Checkpoints are written atomically, so this cannot leave a torn file.

The exit code a command line should use is ``128 + signal number`` (130 for SIGINT, 143 for SIGTERM), the shell's
convention for "ended by this signal". Handlers are only installed in the main thread and are restored on exit.
Forked worker processes (BPE counting, encoding pools) inherit the handler but leave the decision to the parent:
they ignore SIGINT (Ctrl-C reaches the whole process group) and die of SIGTERM as usual, so a pool can be terminated.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

HANDLED = (signal.SIGINT, signal.SIGTERM)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class TrainingInterrupted(Exception):
    """Training stopped because of a signal; ``checkpoint`` is the file a resume will start from (or None)."""

    def __init__(self, signum: int, step: int | None = None, checkpoint: Path | None = None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        where = f" at step {step}" if step is not None else ""
        super().__init__(f"interrupted by {signal_name(signum)}{where}")

    def __reduce__(self):  # picklable (e.g. back from a worker process) with its fields
        return (type(self), (self.signum, self.step, self.checkpoint))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopNow(BaseException):  # noqa: N818 - a control-flow signal like KeyboardInterrupt, not an error
    """A second signal: stop immediately, without finishing the step or writing a checkpoint."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted again by {signal_name(signum)}")

    def __reduce__(self):
        return (type(self), (self.signum,))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopSignals:
    """Context manager that turns SIGINT/SIGTERM into a graceful stop request (see the module docstring)."""

    def __init__(self, notice: Callable[[str], None] | None = None) -> None:
        self.signum: int | None = None
        self._deferring = False
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()
        self._notice = notice or (lambda line: print(line, file=sys.stderr, flush=True))

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked worker: the parent stops the work
            if signum == signal.SIGTERM:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os.kill(os.getpid(), signal.SIGTERM)
            return
        if self.signum is not None:
            raise StopNow(signum)
        self.signum = signum
        if not self._deferring:
            raise TrainingInterrupted(signum)
        again = "Ctrl-C" if signum == signal.SIGINT else "send it"
        self._notice(
            f"received {signal_name(signum)}: finishing this step and writing a checkpoint ({again} again to stop "
            "at once)"
        )

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Within this block a first signal waits for the loop to reach a step boundary."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def requested(self) -> int | None:
        """The signal received so far (None if none)."""
        return self.signum


def agreed_stop(local: int | None, world_size: int, device) -> int | None:
    """Under data parallelism every process must stop at the same step: the largest signal number any rank saw."""
    if world_size <= 1:
        return local
    import torch
    import torch.distributed as dist

    flag = torch.tensor([local or 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None
