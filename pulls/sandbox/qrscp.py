"""pynetdicom's bundled qrscp app: the pure-Python PACS when Orthanc is not installed."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE

from pulls.sandbox.procs import Server, free_port


class Qrscp:
    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "QRSCP",
        destinations: Mapping[str, tuple[str, int]] | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.aet = aet
        self.destinations = dict(destinations or {})  # AE title -> (host, port)
        self.port = port or free_port()
        self.server: Server | None = None

    def _config(self) -> str:
        lines = [
            "[DEFAULT]",
            f"ae_title: {self.aet}",
            f"port: {self.port}",
            "max_pdu: 16382",
            "acse_timeout: 30",
            "dimse_timeout: 30",
            "network_timeout: 30",
            "bind_address: 127.0.0.1",
            f"instance_location: {self.workdir / 'instances'}",
            f"database_location: {self.workdir / 'instances.sqlite'}",
            "log_identifier: False",
        ]
        for ae, (host, port) in self.destinations.items():
            lines += ["", f"[{ae}]", f"address: {host}", f"port: {port}"]
        return "\n".join(lines) + "\n"

    def start(self) -> Qrscp:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "instances").mkdir(exist_ok=True)
        config = self.workdir / "qrscp.ini"
        config.write_text(self._config())
        self.server = Server(
            "qrscp",
            [sys.executable, "-m", "pynetdicom", "qrscp", "-c", str(config)],
            ports=[self.port],
            log_path=self.workdir / "qrscp.log",
        ).start()
        return self

    def load(self, paths: Iterable[Path]) -> int:
        """Send the files with C-STORE (qrscp indexes what it receives).

        Each SOP class is proposed with the files' own transfer syntax only, so
        qrscp stores the bytes as they are and serves them back unchanged.
        """
        paths = list(paths)
        datasets = [dcmread(path) for path in paths]
        ae = AE(ae_title="LOADER")
        for pair in sorted({(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}):
            ae.add_requested_context(pair[0], [pair[1]])
        assoc = ae.associate("127.0.0.1", self.port, ae_title=self.aet)
        if not assoc.is_established:
            raise RuntimeError(f"qrscp on port {self.port} refused the loader's association")
        count = 0
        try:
            for path, ds in zip(paths, datasets, strict=True):
                status = assoc.send_c_store(ds)
                if status is None or status.Status != 0:
                    raise RuntimeError(f"qrscp did not store {path.name}")
                count += 1
        finally:
            assoc.release()
        return count

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> Qrscp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
