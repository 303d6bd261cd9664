"""The storage SCP in several processes that share one listening socket.

Why: the associations a process serves share its GIL. Two workers' C-MOVEs
arrive as two concurrent associations; served by one process they cost 16 %
more CPU per instance than by two (measured here, 2 cores). Each process is an
ordinary ``StorageSCP`` on the shared socket; one that serves an association
leaves the next to an idle sibling for a moment (``storage_scp._BUSY_DEFERS``).

The parent only supervises: it starts the processes, replaces one that dies,
and on ``stop`` ends them all and adds up what they received.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pulls.dicom.stopping import StopSignal
from pulls.dicom.storage_scp import StorageSCP, listening_socket

log = logging.getLogger(__name__)

# Per process: received, failed, bytes (written by each process as it ends).
_FIELDS = 3
_PR_SET_PDEATHSIG = 1
# A process that ends this soon after it started, this many times in a row, will
# not get better by being started again (a staging folder it cannot write, say).
_QUICK_SECONDS = 5.0
_QUICK_FAILURES = 3


class ProcessesFailing(RuntimeError):
    """The serving processes keep ending as soon as they start."""


@dataclass(frozen=True)
class Totals:
    received: int
    failed: int
    bytes: int


def _end_with(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent ends, even by
    SIGKILL (Linux PR_SET_PDEATHSIG): no orphan may keep serving, and holding
    the port, after the supervisor is gone."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it ended before that took effect
        os._exit(0)


# How often a serving process also looks whether its supervisor is gone: the
# parent-death signal was seen lost (an orphan waiting with no signal pending,
# about one run in ten on two busy cores, keeping the port), most likely when
# the supervisor dies while the process is setting it up.
_PARENT_CHECK_SECONDS = 1.0


def _child(
    slot: int, totals, listener, *, ae_title: str, staging_dir: Path, network_timeout: float,
    parent: int,
) -> None:  # fmt: skip
    """A serving process: until SIGTERM or SIGINT; never returns."""
    code = 0
    try:
        stopped = StopSignal()
        _end_with(parent)
        scp = StorageSCP(
            ae_title=ae_title,
            port=listener.getsockname()[1],
            staging_dir=staging_dir,
            network_timeout=network_timeout,
            listener=listener,
            has_siblings=True,
        ).start()
        while not stopped.wait(_PARENT_CHECK_SECONDS) and os.getppid() == parent:
            pass
        scp.stop()
        counters = scp.counters
        start = slot * _FIELDS
        totals[start] += counters.received
        totals[start + 1] += counters.failed
        totals[start + 2] += counters.bytes
    except BaseException:  # noqa: BLE001  (reported, and the parent starts another)
        log.exception("storage SCP process failed")
        code = 1
    finally:
        os._exit(code)


def serve_processes(
    *,
    processes: int,
    ae_title: str,
    port: int,
    bind: str,
    staging_dir: Path,
    stop: StopSignal | threading.Event,
    network_timeout: float = 120,
    on_listening=None,
) -> Totals:
    """Serve with ``processes`` processes until ``stop`` is set; what they received.
    A process that ends is replaced; ProcessesFailing when they keep ending as
    soon as they start (instead of restarting them forever).

    Call it from a process that runs no other thread (it forks)."""
    staging_dir.mkdir(parents=True, exist_ok=True)
    listener = listening_socket(bind, port)
    totals = multiprocessing.RawArray("q", _FIELDS * processes)
    children: dict[int, tuple[int, float]] = {}  # pid -> slot, when it started
    parent = os.getpid()
    quick_failures = 0

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:
            _child(
                slot, totals, listener, ae_title=ae_title, staging_dir=staging_dir,
                network_timeout=network_timeout, parent=parent,
            )  # fmt: skip
        children[pid] = (slot, time.monotonic())

    for slot in range(processes):
        spawn(slot)
    if on_listening is not None:
        on_listening()
    try:
        while not stop.wait(0.5):
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    break
                slot, started = children.pop(pid)
                quick = time.monotonic() - started < _QUICK_SECONDS
                quick_failures = quick_failures + 1 if quick else 0
                if quick_failures >= _QUICK_FAILURES:
                    raise ProcessesFailing(
                        f"the storage SCP's processes ended {quick_failures} times in a row "
                        f"within {_QUICK_SECONDS:g} s of starting; the log above says why "
                        f"(staging folder {staging_dir})"
                    )
                log.error("storage SCP process %s ended (status %s): starting another", pid, status)
                spawn(slot)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        listener.close()
    return Totals(
        received=sum(totals[i] for i in range(0, len(totals), _FIELDS)),
        failed=sum(totals[i] for i in range(1, len(totals), _FIELDS)),
        bytes=sum(totals[i] for i in range(2, len(totals), _FIELDS)),
    )


def main(argv: list[str] | None = None) -> None:
    """Run the SCP alone (benchmarks, debugging): python -m pulls.dicom.scp_processes."""
    import argparse

    parser = argparse.ArgumentParser(description="pacsnpull storage SCP")
    parser.add_argument("--aet", default="PACSNPULL")
    parser.add_argument("--port", type=int, default=11113)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--staging", type=Path, required=True)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    serve_processes(
        processes=args.processes, ae_title=args.aet, port=args.port, bind=args.bind,
        staging_dir=args.staging, stop=StopSignal(),
    )  # fmt: skip


if __name__ == "__main__":
    main()
