"""A PostgreSQL server of its own, from Debian's ``postgresql`` package: a new
cluster in a fresh folder, on 127.0.0.1 and a free port, stopped by PID.

For the test suite's PostgreSQL pass and the benchmarks; durability is off
(fsync, full page writes), as nothing outlives the run. As root, the cluster
belongs to the ``postgres`` user, since initdb and the server refuse to run as
root. Run on its own, it wraps a command:

    python -m pulls.sandbox.postgres -- pytest tests/pulls

starts a cluster, runs the command with ``DATABASE_URL`` pointing at it (and
``PACSNPULL_SANDBOX_POSTGRES_PID``, the server's PID, for benchmarks that count
its CPU), stops the cluster and removes its folder, and exits with the
command's code.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from pulls.sandbox.procs import Server, ServerFailed, exit_on_sigterm, free_port

USER = "pacsnpull"  # the cluster's superuser, trusted on loopback only
DATABASE = "pacsnpull"


def bin_dir() -> Path:
    """The newest installed PostgreSQL's programs (Debian keeps them per version)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    if not found:
        raise ServerFailed("PostgreSQL is not installed: apt-get install postgresql")
    return found[-1].parent


def _owner() -> dict:
    """Popen arguments that run a program as the cluster's owner."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServerFailed(
            "running as root, PostgreSQL needs its 'postgres' user: apt-get install postgresql"
        ) from None
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


class Postgres:
    """A new cluster; ``url`` is its database for Django (``DATABASE_URL``)."""

    def __init__(self, *, port: int | None = None) -> None:
        self.bin = bin_dir()
        self.port = port or free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pacsnpull-pg-"))
        self.url = f"postgres://{USER}@127.0.0.1:{self.port}/{DATABASE}"
        self.server: Server | None = None

    def start(self) -> Postgres:
        try:
            self._start()
        except BaseException:
            self.stop()  # nothing left behind: no server, no folder
            raise
        return self

    def _start(self) -> None:
        owner = _owner()
        if owner:
            shutil.chown(self.folder, "postgres", "postgres")
        data = self.folder / "data"
        initdb = subprocess.run(
            [self.bin / "initdb", "-D", data, "-U", USER, "-A", "trust", "--no-sync", "-E", "UTF8"],
            capture_output=True,
            text=True,
            check=False,
            **owner,
        )
        if initdb.returncode:
            raise ServerFailed(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        options = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.folder),
            "max_connections": "200",
            "fsync": "off",
            "full_page_writes": "off",
            "synchronous_commit": "off",
        }
        argv = [str(self.bin / "postgres"), "-D", str(data), "-p", str(self.port)]
        argv += [arg for name, value in options.items() for arg in ("-c", f"{name}={value}")]
        self.server = Server(
            "postgres",
            argv,
            ports=[self.port],
            log_path=self.folder / "postgres.log",
            user=owner.get("user"),
            stop_signal=signal.SIGINT,  # "fast" shutdown: sessions still open are ended
        ).start()
        created = subprocess.run(
            [self.bin / "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE],
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode:
            raise ServerFailed(f"createdb failed:\n{created.stderr}")

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    exit_on_sigterm()
    with Postgres() as cluster:
        print(f"PostgreSQL {cluster.bin.parent.name} on 127.0.0.1:{cluster.port}", flush=True)
        env = {
            **os.environ,
            "DATABASE_URL": cluster.url,
            "PACSNPULL_SANDBOX_POSTGRES_PID": str(cluster.server.pid),
        }
        return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
