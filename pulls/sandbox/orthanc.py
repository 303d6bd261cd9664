"""An Orthanc of our own (Debian package `orthanc`): own config, folders and ports.

Orthanc 1.10 has no DICOM bind-address option and listens on all interfaces;
we use free ports and connect only to 127.0.0.1. Its HTTP server is limited to
loopback (RemoteAccessAllowed false) and used to load instances.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pulls.sandbox.procs import Server, free_port, require_program


class Orthanc:
    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "ORTHANC",
        modalities: Mapping[str, tuple[str, str, int]] | None = None,
        dicom_port: int | None = None,
        http_port: int | None = None,
        dicomweb: bool = False,
        extra_config: dict | None = None,
    ) -> None:
        self.workdir = workdir
        self.aet = aet
        self.modalities = dict(modalities or {})
        self.dicom_port = dicom_port or free_port()
        self.http_port = http_port or free_port()
        self.dicomweb = dicomweb
        self.extra_config = dict(extra_config or {})
        self.server: Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _config(self) -> dict:
        config = {
            "Name": "pacsnpull-sandbox",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "index"),
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "DicomModalities": {
                name: [ae, host, port] for name, (ae, host, port) in self.modalities.items()
            },
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "StorageCompression": False,
            "OverwriteInstances": True,
            "Plugins": [],
            "StableAge": 1,
            "DicomScpTimeout": 30,
        }
        if self.dicomweb:
            config["Plugins"] = ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"]
            config["DicomWeb"] = {"Enable": True, "Root": "/dicom-web/"}
        config.update(self.extra_config)
        return config

    def start(self) -> Orthanc:
        binary = require_program("Orthanc", "orthanc")
        self.workdir.mkdir(parents=True, exist_ok=True)
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self._config(), indent=2))
        self.server = Server(
            "Orthanc",
            [binary, str(config_path)],
            ports=[self.dicom_port, self.http_port],
            log_path=self.workdir / "orthanc.log",
            env={"TCP_NODELAY": "1"},
        ).start(timeout=60)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> Orthanc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- REST helpers (loopback only) -----------------------------------
    def _request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str = "application/dicom",
    ) -> object:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
        return json.loads(data) if data else None

    def clear(self) -> None:
        """Delete everything it holds (a destination starts empty)."""
        for patient in self.get("/patients"):
            self._request("DELETE", f"/patients/{patient}")

    def delete_study(self, study_uid: str) -> None:
        """Delete one study it holds, named by its StudyInstanceUID."""
        found = self._request("POST", "/tools/lookup", study_uid.encode(), "text/plain")
        for match in found or ():
            if match["Type"] == "Study":
                self._request("DELETE", f"/studies/{match['ID']}")

    def log_requests(self) -> None:
        """From now on its log says each DICOM request it receives ("Incoming
        Get request", ...): verbose, and with what the requests name hidden."""
        request = urllib.request.Request(
            f"{self.url}/tools/log-level", data=b"verbose", method="PUT"
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            response.read()

    def log_text(self) -> str:
        return (self.workdir / "orthanc.log").read_text(encoding="utf-8", errors="replace")

    def instance_file(self, instance_id: str) -> bytes:
        """The DICOM file Orthanc holds for one of its instances."""
        request = urllib.request.Request(f"{self.url}/instances/{instance_id}/file")
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.read()

    def upload(self, paths: Iterable[Path], *, threads: int = 4) -> int:
        def _one(path: Path) -> None:
            self._request("POST", "/instances", path.read_bytes())

        paths = list(paths)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(_one, paths))
        return len(paths)

    def get(self, path: str) -> object:
        return self._request("GET", path)

    def set_modality(self, name: str, ae: str, host: str, port: int) -> None:
        body = json.dumps([ae, host, port]).encode()
        self._request("PUT", f"/modalities/{name}", body, "application/json")

    def instance_count(self) -> int:
        stats = self.get("/statistics")
        assert isinstance(stats, dict)
        return int(stats["CountInstances"])
