"""What the run's processes use: the CPU share other processes took, and peak resident memory.

A figure measured while something else loads the machine is slower and noisier; the
runner reports the share so that a reader knows. Linux's ``/proc`` gives both; elsewhere
the share is None and peak RSS comes from ``getrusage``.
"""

from __future__ import annotations

import os
import platform
import resource
import time
from collections.abc import Callable


def _busy_jiffies() -> int | None:
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return sum(fields[:3]) + sum(fields[5:8])


def _live_descendants_cpu() -> float:
    """CPU seconds of this process's descendants that are still running (or not yet
    waited for), e.g. the peer worker: ``os.times`` counts a child only once it is reaped."""
    try:
        tick = os.sysconf("SC_CLK_TCK")
        procs = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except OSError:
                    continue  # gone meanwhile
                # after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15)
                procs[int(entry)] = (int(fields[1]), sum(int(x) for x in fields[11:15]) / tick)
    except (OSError, ValueError, IndexError):
        return 0.0
    mine, total, grew = {os.getpid()}, 0.0, True
    while grew:
        grew = False
        for pid, (ppid, cpu) in procs.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                total += cpu
                grew = True
    return total


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy since boot (``/proc/stat``), or None."""
    jiffies = _busy_jiffies()
    return None if jiffies is None else jiffies / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its descendants: reaped ones from ``os.times``, live
    ones (the peer worker) from ``/proc``."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + _live_descendants_cpu()


class CpuShare:
    """How much CPU *other* processes took while the benchmark ran (they slow every figure).

    Busy time of the whole machine minus this process's own CPU time and its descendants'
    (:func:`own_cpu_s`), over wall time x CPUs. Linux only; None elsewhere. The readings
    are functions so that the arithmetic can be checked with readings a test chooses.
    """

    def __init__(self, busy: Callable[[], float | None] = machine_busy_s, own: Callable[[], float] = own_cpu_s,
                 clock: Callable[[], float] = time.time, cpus: int | None = None) -> None:
        self._busy, self._own, self._clock = busy, own, clock
        self.cpus = cpus or os.cpu_count() or 1
        self._t0, self._busy0, self._own0 = clock(), busy(), own()
        self.load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    def own_s(self) -> float:
        """CPU seconds this run (its process and descendants) used since the share began."""
        return self._own() - self._own0

    def others_fraction(self) -> float | None:
        busy = self._busy()
        if busy is None or self._busy0 is None:
            return None
        wall = self._clock() - self._t0
        others = (busy - self._busy0) - self.own_s()
        return max(0.0, others / (wall * self.cpus)) if wall > 0 else None


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB.

    ``VmHWM`` from ``/proc/self/status`` where it exists: Linux keeps
    ``ru_maxrss`` across ``execve``, so a child started from a big parent would
    report the parent's peak. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if platform.system() == "Darwin" else 2**10), 1)
