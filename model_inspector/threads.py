"""CPU threads: use the cores this process may run on, and no more than are idle.

torch's default intra-op thread count is the machine's physical cores. In a container (or under
``taskset``) the process may use fewer, and on a shared machine other processes keep some busy:
OpenMP threads that wait on a busy core spin, and measured here a format job took 627 s with the
default against 120 s with one thread while other work ran. :func:`default_threads` takes the cores
the process may use (``os.sched_getaffinity``, capped by the cgroup CPU quota) less the current load
(the 1-minute load average), at least 1. ``OMP_NUM_THREADS`` set by the user wins.
"""

from __future__ import annotations

import math
import os

__all__ = ["available_cores", "default_threads", "set_threads"]


def available_cores() -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 ``cpu.max`` quota."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, n)


def default_threads() -> int:
    """``OMP_NUM_THREADS`` if set, else the available cores less the 1-minute load average (>= 1)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = available_cores()
    try:
        busy = os.getloadavg()[0]
    except (OSError, AttributeError):
        busy = 0.0
    return max(1, min(cores, int(cores - busy + 0.5)))


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (``None``: :func:`default_threads`); returns the number."""
    import torch

    n = default_threads() if n is None else int(n)
    if n < 1:
        from .errors import UserError

        raise UserError(f"--threads must be a positive integer (got {n})")
    torch.set_num_threads(n)
    return n
