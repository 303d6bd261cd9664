"""SIGTERM and SIGINT as something a long-running process waits for.

A signal handler that calls ``threading.Event.set()`` can hang the process for
good: Python runs handlers in the main thread between two bytecodes, and when
that thread is inside ``Event.wait()`` holding the event's own (non-reentrant)
lock, ``set()`` waits for it forever. Under load a storage SCP process, told
to stop when its supervisor died, hung that way (a test caught it about once
in ten runs on two busy cores). Here the handler takes no lock: it sets a flag
and writes a byte to a pipe, and ``wait`` watches the pipe.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
from collections.abc import Iterable


class StopSignal:
    """Set by one of ``signals`` (or by ``set()``); installs their handlers."""

    def __init__(self, signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> None:
        self._set = False
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        self._set = True
        with contextlib.suppress(OSError):  # full (already woken) or closed
            os.write(self._write, b"\0")

    def set(self) -> None:
        self._handle(0, None)

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Until set, or ``timeout`` seconds; whether it is set."""
        if not self._set:
            readable, _, _ = select.select([self._read], [], [], timeout)
            if readable:
                with contextlib.suppress(OSError):
                    os.read(self._read, 512)  # drained: the next wait blocks again
        return self._set
