"""Starting and stopping server processes by PID."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


class ServerFailed(RuntimeError):
    """A server process did not come up; the message holds the tail of its log."""


def free_port() -> int:
    """A TCP port that nothing listens on right now (loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def exit_on_sigterm() -> None:
    """Make SIGTERM end this process as Ctrl-C does, through its ``finally``
    blocks: a script that started servers then stops them (by PID) when it is
    terminated, instead of leaving them running."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def require_program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ServerFailed(f"{name} is not installed: apt-get install {package}")
    return path


class Server:
    """A child process that serves on one or more loopback ports."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ports: Sequence[int],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ports = list(ports)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.user = user  # run as this user (root starting PostgreSQL)
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, timeout: float = 30) -> Server:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115  (kept open for the child)
        environ = dict(os.environ)
        environ.update(self.env or {})
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=environ,
            cwd=self.cwd,
            **({"user": self.user, "group": self.user, "extra_groups": []} if self.user else {}),
            # Own process group: Ctrl-C in the terminal reaches our parent, which
            # stops us in order, and stop() can end the whole group by PID.
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerFailed(
                    f"{self.name} exited with code {self.proc.returncode}:\n{self.log_tail()}"
                )
            if all(port_open(p) for p in self.ports):
                return self
            time.sleep(0.1)
        self.stop()
        raise ServerFailed(f"{self.name} did not listen within {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, self.stop_signal)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault-injection tests."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
