"""How many CPU threads a run uses: ``train.num_threads``, or with 0 ("auto") as many as the machine has free.

PyTorch's default is one intra-op thread per core. Its threads wait for each other at the end of every parallel op,
so when other processes hold the cores, each op waits for its slowest, descheduled thread and training collapses:
the quickstart model trained at 329 tokens/s with the default 2 threads and at 3,421 tokens/s with 1 thread on a
2-core machine with a load average of ~10 (``benchmarks/results/threads.md``). "auto" therefore takes the free
cores, ``cores - 1-minute load average`` rounded, at least 1 and at most torch's default, and says so in one line;
when the load average exceeds the cores it also warns that the machine is oversubscribed. Set ``train.num_threads``
to a number to fix it (e.g. for bit-identical CPU runs across machines and loads: float reductions may be split
differently with a different thread count).
"""

from __future__ import annotations

import os

import torch


def auto_threads(default: int, cores: int, load: float | None) -> int:
    """Threads to use given torch's default, the core count and the 1-minute load average (None: unknown)."""
    if load is None:
        return default
    return max(1, min(default, round(cores - load)))


def set_threads(requested: int, announce=print, setting: str = "train.num_threads") -> int:
    """Apply ``requested`` threads (0 = auto, see the module docstring); returns the count in use.

    ``setting`` names the option that overrides auto in the notice (``--num-threads`` for the CLIs).
    """
    if requested:
        torch.set_num_threads(requested)
        return requested
    default, cores = torch.get_num_threads(), os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        load = None
    threads = auto_threads(default, cores, load)
    torch.set_num_threads(threads)
    if load is not None and (threads < default or load > cores):
        message = f"threads: {threads} of {default} ({setting} 0 is auto: load average {load:.1f} on "
        message += f"{cores} cores"
        if load > cores:
            message += "; the machine is oversubscribed, so runs will be slower than on an idle machine"
        announce(message + f"; set {setting} to override)")
    return threads
