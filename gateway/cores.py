"""How many CPU cores a process may use, and how serving and the loop share them.

torch's CPU threads (OpenMP) spin-wait at every parallel region's barrier: a thread count
larger than the cores a process really has turns each step into a wait for a thread the
scheduler parked, and ``nice`` does not help (docs/benchmarks.md: a student answering in
1.7 s instead of 62 ms beside a one-thread trainer; two 2-thread builds on 2 cores each 6.7x
slower). So counts are chosen, never left to torch's default: serving takes the cores the
loop's trainer leaves, the loop runs at idle priority, and a training run without a fixed
count follows the cores other processes leave it (``CoreWatch``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

__all__ = ["CoreWatch", "available_cores", "run_in_background", "serving_threads"]

_CGROUP_QUOTA = Path("/sys/fs/cgroup/cpu.max")
_PROC_STAT = Path("/proc/stat")


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (a
    container's ``--cpus``), else the machine's count."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    try:
        quota, period = _CGROUP_QUOTA.read_text().split()
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def serving_threads(cores: int, reserved: int) -> int:
    """The serving engine's torch threads beside ``reserved`` threads of a trainer: never
    more than the cores left (at least one), so no serving thread spins on a trainer's core."""
    return max(1, cores - reserved)


def run_in_background(nice: int) -> str:
    """Lower this process (and what it starts) below everything else on the machine:
    ``SCHED_IDLE`` where the OS has it (Linux: it runs only on cores nothing else wants),
    else ``nice``. Returns what was applied, for the log."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return "idle priority (SCHED_IDLE)"
        except OSError:
            pass
    if nice > 0:
        os.nice(nice)
        return f"nice {nice}"
    return "normal priority"


class CoreWatch:
    """The cores other processes keep busy, measured between two calls of ``threads``:
    the busy time of this process's cores (``/proc/stat``) less this process's own CPU time.

    A training run that owns no fixed thread count calls ``poll`` every step and sets
    torch's count to what it returns, so two builds on one machine settle on a core each
    instead of oversubscribing both, and one alone takes every core. Where ``/proc/stat`` is
    missing (not Linux), every available core.
    """

    def __init__(self, cores: int | None = None, *, interval_s: float = 5.0) -> None:
        self.cores = cores or available_cores()
        self.interval_s = interval_s
        ids = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        self._rows = {f"cpu{i}" for i in ids}
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall seconds, busy CPU seconds of this process's cores, own CPU seconds)."""
        try:
            lines = _PROC_STAT.read_text().splitlines()
        except OSError:
            return None
        ticks = os.sysconf("SC_CLK_TCK")
        busy = 0
        for line in lines:
            name, *fields = line.split()
            if name in self._rows:
                values = [int(f) for f in fields]
                busy += sum(values) - values[3] - values[4]  # less idle and iowait
        own = os.times()
        return time.monotonic(), busy / ticks, own.user + own.system

    def threads(self) -> int:
        """The cores nobody else kept busy since the last call (at least one)."""
        now = self._sample()
        last, self._last = self._last, now
        if now is None or last is None or now[0] - last[0] <= 0:
            return self.cores
        others = ((now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0])
        return max(1, min(self.cores, self.cores - round(max(0.0, others))))

    def poll(self) -> int | None:
        """``threads`` once ``interval_s`` has passed since the last measure, else None."""
        if self._last is not None and time.monotonic() - self._last[0] < self.interval_s:
            return None
        return self.threads()
