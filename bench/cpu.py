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


def process_seconds(pid: int | None) -> tuple[float, float]:
    """User and system CPU seconds of a process and its live children."""
    if pid is None:
        return 0.0, 0.0
    user = system = 0
    for current in _tree(pid):
        try:
            with open(f"/proc/{current}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue
        user += int(fields[11])  # utime
        system += int(fields[12])  # stime
    return user / _TICK, system / _TICK


def _usage(who: int) -> tuple[float, float]:
    usage = resource.getrusage(who)
    return usage.ru_utime, usage.ru_stime


class CpuMeter:
    """CPU seconds by name between start() and stop(); names map to PIDs, and
    'bench process' and 'ended children' (DCMTK's tools) are always counted.
    ``stop`` returns the total (user + system) by name; ``system`` keeps the
    kernel's share, which tells system calls from Python apart."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.before: dict[str, tuple[float, float]] = {}
        self.used: dict[str, float] = {}
        self.system: dict[str, float] = {}

    def _read(self) -> dict[str, tuple[float, float]]:
        now = {name: process_seconds(pid) for name, pid in self.pids.items()}
        now["bench process"] = _usage(resource.RUSAGE_SELF)
        now["ended children"] = _usage(resource.RUSAGE_CHILDREN)
        return now

    def start(self) -> CpuMeter:
        self.before = self._read()
        return self

    def stop(self) -> dict[str, float]:
        after = self._read()
        for name, (user, system) in after.items():
            user_before, system_before = self.before[name]
            self.system[name] = system - system_before
            self.used[name] = user - user_before + self.system[name]
        return self.used
