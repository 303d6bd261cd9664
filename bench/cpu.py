"""CPU time used by processes during a timed run (from /proc, Linux only).

On a machine with two cores, a pipeline that spends more CPU per instance than
the tool it is compared with is slower for that reason alone: the PACS runs on
the same cores. The benchmarks print where the CPU went so a ratio can be read.
"""

from __future__ import annotations

import os
import resource

_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as fh:
                pending += [int(child) for child in fh.read().split()]
        except OSError:
            continue
    return found


def process_seconds(pid: int | None) -> float:
    """User + system CPU seconds of a process and its live children."""
    if pid is None:
        return 0.0
    total = 0
    for current in _tree(pid):
        try:
            with open(f"/proc/{current}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def finished_children_seconds() -> float:
    """CPU seconds of this process's children that have ended (DCMTK tools)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """CPU seconds by name between start() and stop(); names map to PIDs, and
    'this process' and 'ended children' are always counted."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        now = {name: process_seconds(pid) for name, pid in self.pids.items()}
        now["bench process"] = own_seconds()
        now["ended children"] = finished_children_seconds()
        return now

    def start(self) -> CpuMeter:
        self.before = self._read()
        return self

    def stop(self) -> dict[str, float]:
        after = self._read()
        self.used = {name: after[name] - self.before[name] for name in after}
        return self.used
