"""DCMTK's dcmqrscp as a second, stricter PACS (Debian package `dcmtk`).

Facts that shape this launcher: every move destination must be in its
HostTable; a storage area holds at most the quota's studies (500 here); as
root its config must not switch user, so it names none. Files are indexed in
place with dcmqridx, which is much faster than C-STORE.

By default it accepts, as a C-GET's storage contexts, the uncompressed syntaxes
only, and a C-MOVE's sub-association proposes those alone for the standard
classes. Given ``storage_classes``, it runs with an association profile
(``-xf``) as an archive of compressed data would: a C-GET may offer those
classes in any syntax (in the SCP role), and its C-MOVEs propose them too
(private ones included). It still sends each instance in the first context it
accepted for the class (DCMTK picks a context by SOP class alone) and cannot
decompress.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pulls.sandbox.procs import Server, free_port, require_program

_MAX_IDX_ARGS = 200
VERIFICATION = "1.2.840.10008.1.1"
UNCOMPRESSED = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"]
# The others DCMTK 3.6.7 knows (not HTJ2K, JPEG XL, the newer deflate): deflate,
# JPEG, JPEG-LS, JPEG 2000, RLE, MPEG-2/4 and HEVC.
_DCMTK_COMPRESSED = [
    "1.2.840.10008.1.2.1.99",
    *(f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93)),
    "1.2.840.10008.1.2.5",
    *(f"1.2.840.10008.1.2.4.{n}" for n in range(100, 109)),
]


class Dcmqrscp:
    def __init__(
        self,
        workdir: Path,
        *,
        aet: str = "DCMQRSCP",
        hosts: Mapping[str, tuple[str, str, int]] | None = None,
        port: int | None = None,
        storage_classes: Sequence[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.aet = aet
        self.hosts = dict(hosts or {})
        self.port = port or free_port()
        self.db_dir = workdir / "db"
        self.storage_classes = list(storage_classes or [])
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

    def _profile(self) -> str:
        """An association profile (DCMTK's asccfg format) for ``storage_classes``."""
        query_models = [
            f"1.2.840.10008.5.1.4.1.2.{root}.{service}" for root in (1, 2) for service in (1, 2, 3)
        ]
        incoming = [f"{VERIFICATION}\\Uncompressed"] + [
            f"{uid}\\Uncompressed" for uid in query_models
        ]
        incoming += [f"{uid}\\Any" for uid in self.storage_classes]
        outgoing = [f"{uid}\\Uncompressed" for uid in self.storage_classes]
        any_syntax = UNCOMPRESSED + _DCMTK_COMPRESSED
        roles = [f"{uid}\\SCP" for uid in self.storage_classes]

        def numbered(prefix: str, values: list[str]) -> str:
            return "\n".join(f"{prefix}{n} = {value}" for n, value in enumerate(values, start=1))

        return f"""# written by pulls.sandbox.dcmqrscp
[[TransferSyntaxes]]
[Uncompressed]
{numbered("TransferSyntax", UNCOMPRESSED)}
[Any]
{numbered("TransferSyntax", any_syntax)}

[[PresentationContexts]]
[Incoming]
{numbered("PresentationContext", incoming)}
[Outgoing]
{numbered("PresentationContext", outgoing)}

[[SCPSCURoleSelection]]
[GetRoles]
{numbered("Role", roles)}

[[Profiles]]
[Incoming]
PresentationContexts = Incoming
SCPSCURoleSelection = GetRoles
[Outgoing]
PresentationContexts = Outgoing
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
        argv = [binary, "-c", str(config_path)]
        if self.storage_classes:
            profile_path = self.workdir / "associations.cfg"
            profile_path.write_text(self._profile())
            argv += ["-xf", str(profile_path), "Incoming", "Outgoing"]
        self.server = Server(
            "dcmqrscp",
            argv,
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
