"""DCMTK's dcmqrscp as a second, stricter PACS (Debian package `dcmtk`).

Facts that shape this launcher: every move destination must be in its
HostTable; a storage area holds at most the quota's studies (500 here); as
root its config must not switch user, so it names none. Files are indexed in
place with dcmqridx, which is much faster than C-STORE.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from pulls.sandbox.procs import Server, free_port, require_program

_MAX_IDX_ARGS = 200


class Dcmqrscp:
    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "DCMQRSCP",
        hosts: Mapping[str, tuple[str, str, int]] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.aet = aet
        self.hosts = dict(hosts or {})
        self.port = port or free_port()
        self.db_dir = workdir / "db"
        self.server: Server | None = None

    def _config(self) -> str:
        host_lines = "\n".join(
            f"{name} = ({ae}, {host}, {port})" for name, (ae, host, port) in self.hosts.items()
        )
        return f"""# written by pulls.sandbox.dcmqrscp
NetworkTCPPort  = {self.port}
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
{host_lines}
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
{self.aet}  {self.db_dir}  RW  (500, 1024mb)  ANY
AETable END
"""

    def load(self, paths: Iterable[Path]) -> int:
        """Index files into the storage area (they stay where they are)."""

        dcmqridx = require_program("dcmqridx", "dcmtk")
        self.db_dir.mkdir(parents=True, exist_ok=True)
        paths = [str(p) for p in paths]
        for start in range(0, len(paths), _MAX_IDX_ARGS):
            subprocess.run(
                [dcmqridx, str(self.db_dir), *paths[start : start + _MAX_IDX_ARGS]],
                check=True,
                capture_output=True,
            )
        return len(paths)

    def start(self) -> Dcmqrscp:
        binary = require_program("dcmqrscp", "dcmtk")
        self.db_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "dcmqrscp.cfg"
        config_path.write_text(self._config())
        self.server = Server(
            "dcmqrscp",
            [binary, "-c", str(config_path)],
            ports=[self.port],
            log_path=self.workdir / "dcmqrscp.log",
            env={"TCP_NODELAY": "1"},
        ).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> Dcmqrscp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
