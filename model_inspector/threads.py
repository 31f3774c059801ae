"""CPU threads: use the cores this process may run on, and no more than are idle.

torch's default intra-op thread count is the machine's physical cores. In a container (or under
``taskset``) the process may use fewer, and on a shared machine other processes keep some busy:
OpenMP threads that wait on a busy core spin, and measured here a format job took 627 s with the
default against 120 s with one thread while other work ran. :func:`default_threads` takes the cores
the process may use (``os.sched_getaffinity``, capped by the cgroup CPU quota) less the cores that are
busy right now (measured from ``/proc/stat`` over 0.2 s on those CPUs; the load average is a poor guide
here: it read 1.03 on this machine with both cores idle), at least 1. ``OMP_NUM_THREADS`` set by the
user wins.
"""

from __future__ import annotations

import math
import os
import time

__all__ = ["available_cores", "busy_cores", "default_threads", "set_threads"]


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


def _cpu_times() -> dict:
    out = {}
    with open("/proc/stat") as fh:
        for line in fh:
            if line.startswith("cpu") and line[3].isdigit():
                parts = line.split()
                values = [int(v) for v in parts[1:]]
                out[int(parts[0][3:])] = (sum(values), values[3] + (values[4] if len(values) > 4 else 0))
    return out


def busy_cores(window: float = 0.2) -> float:
    """How many of this process's CPUs are busy now (sum of their busy fractions over ``window``
    seconds, from ``/proc/stat``); the 1-minute load average where that is not readable."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
        a = _cpu_times()
        time.sleep(window)
        b = _cpu_times()
        busy = 0.0
        for c in cpus:
            total, idle = b[c][0] - a[c][0], b[c][1] - a[c][1]
            busy += 1.0 - idle / total if total > 0 else 0.0
        return busy
    except (OSError, KeyError, AttributeError, ValueError):
        try:
            return os.getloadavg()[0]
        except (OSError, AttributeError):
            return 0.0


def default_threads() -> int:
    """``OMP_NUM_THREADS`` if set, else the available cores less the busy ones (at least 1)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    cores = available_cores()
    return max(1, min(cores, int(cores - busy_cores() + 0.5)))


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op threads to ``n`` (``None``: :func:`default_threads`); returns the number. More than
    :func:`available_cores` prints one warning line."""
    import torch

    n = default_threads() if n is None else int(n)
    if n < 1:
        from .errors import UserError

        raise UserError(f"--threads must be a positive integer (got {n})")
    cores = available_cores()
    if n > cores:
        import sys

        print(f"warning: --threads {n} is more than the {cores} cores this process may use; the extra threads wait "
              "on busy cores (slower, same numbers only with the same count)", file=sys.stderr)
    torch.set_num_threads(n)
    return n
