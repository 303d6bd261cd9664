"""Receiving instances into the staging area: the write side of the C-STORE path.

Each data set is written as it came (preamble, file meta naming the negotiated
transfer syntax, the data set's bytes untouched), atomically (temp file +
rename) to ``staging/<StudyInstanceUID>/<SOPInstanceUID>.dcm``. A full disk is
answered with 0xA700; the file is never left half-written.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import itertools
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID

from pulls.dicom.paths import layout_relpath
from pulls.dicom.staging import TEMP_PREFIX, instance_name, study_name
from pulls.dicom.wire import (
    C_STORE_RSP,
    IMPLEMENTATION_VERSION,
    NO_DATASET,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    Connection,
    encode_command,
)

log = logging.getLogger(__name__)

# A data set is held in memory up to this size, then spilled to a temp file, so
# a huge multi-frame object never sits in memory whole.
SPILL_AT = 8 << 20
# The first bytes of a data set: enough to find StudyInstanceUID in practice.
HEAD_SIZE = 64 << 10
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"
_BIG_ENDIAN = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99",)  # the data set itself is deflated


@dataclass
class StoreCounters:
    received: int = 0
    failed: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, ok: bool, size: int) -> None:
        with self.lock:
            if ok:
                self.received += 1
                self.bytes += size
            else:
                self.failed += 1


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


@functools.lru_cache(maxsize=256)
def _meta_around(sop_class: str, transfer_syntax: str, source_ae: str) -> tuple[bytes, bytes]:
    """The group 0002 elements before and after the SOP Instance UID: the same
    for every instance of an association's presentation context."""
    before = _meta_element(0x0001, b"OB", b"\x00\x01") + _meta_element(
        0x0002, b"UI", sop_class.encode("ascii", "replace")
    )
    after = (
        _meta_element(0x0010, b"UI", transfer_syntax.encode("ascii"))
        + _meta_element(0x0012, b"UI", str(PYNETDICOM_IMPLEMENTATION_UID).encode())
        + _meta_element(0x0013, b"SH", IMPLEMENTATION_VERSION.encode())
    )
    if source_ae:
        after += _meta_element(0x0016, b"AE", source_ae.encode("ascii", "replace"))
    return before, after


_PREAMBLE = b"\x00" * 128 + b"DICM"


def file_header(
    *, sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str
) -> bytes:
    """Preamble, DICM and group 0002 (explicit VR little endian, PS3.10 7.1)."""
    before, after = _meta_around(sop_class, transfer_syntax, source_ae)
    body = before + _meta_element(0x0003, b"UI", sop_instance.encode("ascii", "replace")) + after
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return _PREAMBLE + group_length + body


# Explicit VR with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = {
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"
}  # fmt: skip


def scan_tags(head: bytes, tags: set[int], *, implicit: bool) -> dict[int, bytes] | None:
    """Values of top-level ``tags`` from the start of a little-endian data set.

    Walks the elements up to the largest tag asked for. Returns None when it
    cannot be sure (an undefined length, such as a sequence, or a short head):
    the caller then lets pydicom read the data set properly.
    """
    found: dict[int, bytes] = {}
    last = max(tags)
    offset, size = 0, len(head)
    while offset + 8 <= size:
        group, element = struct.unpack_from("<HH", head, offset)
        tag = group << 16 | element
        if tag > last:
            return found
        if implicit:
            (length,) = struct.unpack_from("<I", head, offset + 4)
            offset += 8
        else:
            vr = head[offset + 4 : offset + 6]
            if vr in _LONG_VRS:
                if offset + 12 > size:
                    return None
                (length,) = struct.unpack_from("<I", head, offset + 8)
                offset += 12
            else:
                (length,) = struct.unpack_from("<H", head, offset + 6)
                offset += 8
        if length == 0xFFFFFFFF:
            return None
        if tag in tags:
            if offset + length > size:
                return None
            found[tag] = head[offset : offset + length].rstrip(b"\x00 ")
        offset += length
    return found if len(found) == len(tags) else None


# What placement needs of a data set (PS3.3 C.7): keyword by tag.
KEY_TAGS = {
    0x00100020: "PatientID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
}
KEYWORDS = list(KEY_TAGS.values())


def keys_from_head(head: bytes, transfer_syntax: str) -> dict[str, str] | None:
    """The placement keys from the first bytes of a data set, or None if unsure."""
    if transfer_syntax in _DEFLATED:
        head = zlib.decompressobj(-zlib.MAX_WBITS).decompress(head)
    elif transfer_syntax not in (_EXPLICIT_LE, _IMPLICIT_LE):
        return None  # big endian: pydicom knows how
    found = scan_tags(head, set(KEY_TAGS), implicit=transfer_syntax == _IMPLICIT_LE)
    if found is None:
        return None
    return {
        name: found.get(tag, b"").decode("utf-8", "replace").strip()
        for tag, name in KEY_TAGS.items()
    }


class InstanceWriter:
    """Writes received data sets to ``staging/<study>/<sop>.dcm``, atomically.

    The file is written as it came: preamble, file meta information naming the
    negotiated transfer syntax, then the data set bytes untouched.
    """

    def __init__(self, staging_dir: Path) -> None:
        self.staging_dir = staging_dir
        self.root = str(staging_dir)  # paths are built as strings: pathlib costs per instance
        self.incoming = staging_dir / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.counters = StoreCounters()
        self._names = itertools.count()
        self._prefix = f"{TEMP_PREFIX}{os.getpid()}-"

    def temp_name(self) -> str:
        return f"{self._prefix}{next(self._names)}.part"

    def destination(self, keys: dict[str, str], sop_uid: str) -> str:
        """Where the instance goes, relative to ``self.root``, '/'-separated."""
        return f"{study_name(keys['StudyInstanceUID'])}/{instance_name(sop_uid)}"

    def placed(self, relative: str, keys: dict[str, str], size: int) -> None:
        """Called after each instance is in place (for writers that keep a record)."""

    def begin(self, conn: Connection, context_id: int, command: dict[int, object]) -> _PendingStore:
        return _PendingStore(self, conn, context_id, command)


@dataclass(frozen=True)
class Placed:
    path: str  # relative to the project folder, '/'-separated
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    modality: str
    size: int


class ProjectWriter(InstanceWriter):
    """Writes C-GET instances straight to their place in a project's folder.

    The layout is ``paths.layout_relpath``; there is no staging step, because the
    association that receives them belongs to one job. Each placed instance is
    kept in ``self.placed_instances`` for the caller to record.
    """

    def __init__(self, project_dir: Path) -> None:
        super().__init__(project_dir)
        self.placed_instances: list[Placed] = []

    def destination(self, keys: dict[str, str], sop_uid: str) -> str:
        return layout_relpath(keys, fallback_sop=sop_uid)

    def placed(self, relative: str, keys: dict[str, str], size: int) -> None:
        self.placed_instances.append(
            Placed(
                path=relative,
                patient_id=keys["PatientID"],
                study_instance_uid=keys["StudyInstanceUID"],
                series_instance_uid=keys["SeriesInstanceUID"],
                sop_instance_uid=keys["SOPInstanceUID"],
                modality=keys["Modality"],
                size=size,
            )
        )


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def _create(folder: str, name: str) -> int:
    try:
        return os.open(f"{folder}/{name}", _CREATE_FLAGS, 0o640)
    except FileNotFoundError:  # first instance of the study, or the area was cleaned
        os.makedirs(folder, exist_ok=True)
        return os.open(f"{folder}/{name}", _CREATE_FLAGS, 0o640)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _PendingStore:
    def __init__(
        self, owner: InstanceWriter, conn: Connection, context_id: int, command: dict
    ) -> None:
        self.owner = owner
        self.conn = conn
        self.context_id = context_id
        self.command = command
        self.status = STATUS_SUCCESS
        self.size = 0
        self.chunks: list[bytes] = []
        self.head = b""  # the data set's first bytes, kept once it is spilled
        self.spill: io.BufferedWriter | None = None
        self.spill_path: Path | None = None
        sop_class, self.transfer_syntax = conn.accepted.contexts.get(context_id, ("", ""))
        self.header = file_header(
            sop_class=str(command.get(0x0002, sop_class)),
            sop_instance=str(command.get(0x1000, "")),
            transfer_syntax=self.transfer_syntax,
            source_ae=conn.accepted.calling_ae,
        )

    def _fail(self, exc: OSError) -> None:
        self.status = (
            STATUS_OUT_OF_RESOURCES
            if exc.errno in (errno.ENOSPC, errno.EDQUOT)
            else STATUS_PROCESSING_FAILURE
        )
        log.error("could not write a received instance: %s", exc.strerror)
        self.discard()

    def write(self, data: memoryview) -> None:
        if self.status != STATUS_SUCCESS:
            return  # failed already: keep reading the fragments, answer at the end
        self.size += len(data)
        try:
            if self.spill is not None:
                self.spill.write(data)
                return
            self.chunks.append(bytes(data))
            if self.size > SPILL_AT:
                self.head = b"".join(self.chunks)[:HEAD_SIZE]
                name = self.owner.temp_name()
                fd = _create(str(self.owner.incoming), name)
                self.spill_path = self.owner.incoming / name
                self.spill = os.fdopen(fd, "wb", buffering=1 << 20)
                self.spill.write(self.header)
                for chunk in self.chunks:
                    self.spill.write(chunk)
                self.chunks = []
        except OSError as exc:
            self._fail(exc)

    def discard(self) -> None:
        self.chunks = []
        if self.spill is not None:
            with contextlib.suppress(OSError):
                self.spill.close()
            self.spill = None
        if self.spill_path is not None:
            self.spill_path.unlink(missing_ok=True)
            self.spill_path = None

    def _keys(self, data: bytes | None) -> dict[str, str]:
        # In memory the whole data set is there; the scan stops after the last key.
        found = keys_from_head(self.head if data is None else data, self.transfer_syntax)
        if found is not None:
            return found
        # Not readable from the head: let pydicom read the header from memory or the spill.
        source = io.BytesIO(self.header + data) if data is not None else self.spill_path
        ds = dcmread(source, stop_before_pixels=True, specific_tags=KEYWORDS)
        return {key: str(ds.get(key, "") or "") for key in KEYWORDS}

    def _place(self) -> None:
        data: bytes | None = None
        if self.spill is not None:
            self.spill.close()  # complete on disk (the header too) before it is read
            self.spill = None
        else:
            data = b"".join(self.chunks)
            self.chunks = []
        keys = self._keys(data)
        relative = self.owner.destination(keys, str(self.command.get(0x1000, "")))
        final = f"{self.owner.root}/{relative}"
        folder = final.rpartition("/")[0]
        if data is None:
            os.makedirs(folder, exist_ok=True)
            os.replace(self.spill_path, final)
            self.spill_path = None
        else:
            temp = f"{folder}/{self.owner.temp_name()}"
            fd = _create(folder, temp.rpartition("/")[2])
            try:
                try:
                    _write_all(fd, self.header + data)
                finally:
                    os.close(fd)
                os.replace(temp, final)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        self.owner.placed(relative, keys, len(self.header) + self.size)

    def finish(self) -> None:
        if self.status == STATUS_SUCCESS:
            try:
                self._place()
            except OSError as exc:
                self._fail(exc)
            except Exception as exc:  # noqa: BLE001  (an unreadable data set is the peer's fault)
                log.warning("received data set unreadable: %s", type(exc).__name__)
                self.status = STATUS_PROCESSING_FAILURE
                self.discard()
        self.owner.counters.add(ok=self.status == STATUS_SUCCESS, size=self.size)
        self.conn.send_message(
            self.context_id,
            encode_command(
                {
                    0x0002: str(self.command.get(0x0002, "")),
                    0x0100: C_STORE_RSP,
                    0x0120: int(self.command.get(0x0110, 0)),
                    0x0800: NO_DATASET,
                    0x0900: self.status,
                    0x1000: str(self.command.get(0x1000, "")),
                }
            ),
        )
