"""Receiving instances into the staging area: the write side of the C-STORE path.

Each data set is written as it came (preamble, file meta naming the negotiated
transfer syntax, the data set's bytes untouched), atomically (a temp file in
``.incoming``, then a rename) to ``staging/<StudyInstanceUID>/<SOPInstanceUID>.dcm``
(C-GET: to its place in the project, ``ProjectWriter``). A full disk is
answered with 0xA700 (C-GET, which answers first: counted as not written); the
file is never left half-written.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from pydicom import dcmread

from pulls.dicom.commands import (
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    encode_store_response,
)
from pulls.dicom.headers import HEAD_SIZE, KEYWORDS, file_header, keys_from_head
from pulls.dicom.paths import layout_relpath
from pulls.dicom.staging import TEMP_PREFIX, IndexWriter, instance_name, study_name
from pulls.dicom.wire import Connection

log = logging.getLogger(__name__)

# A data set is held in memory up to this size, then spilled to a temp file, so
# a huge multi-frame object never sits in memory whole.
SPILL_AT = 8 << 20


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


@dataclass
class StoreCounters:
    received: int = 0
    failed: int = 0
    # Of the failed: answered with success, then not written or not renamed;
    # and of those, how many for want of space.
    unwritten: int = 0
    unwritten_no_space: int = 0
    bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, *, ok: bool, size: int, unwritten: OSError | None = None) -> None:
        with self.lock:
            if ok:
                self.received += 1
                self.bytes += size
                return
            self.failed += 1
            if unwritten is not None:
                self.unwritten += 1
                self.unwritten_no_space += unwritten.errno in _NO_SPACE


class InstanceWriter:
    """Writes received data sets to ``staging/<study>/<sop>.dcm``, atomically.

    The file is written as it came: preamble, file meta information naming the
    negotiated transfer syntax, then the data set bytes untouched.
    """

    # The staging index names each file's inode (see ``staging``).
    notes_inodes = True
    # When the peer gets its answer to a C-STORE. By default once the file is
    # in its place: a success means the instance is on this disk (the storage
    # SCP receives from any PACS; and a C-MOVE's final response then never
    # comes before its last file). With answers_first, as soon as the data set
    # has arrived whole and its keys are read: the file is written while the
    # peer prepares its next instance (a peer sends one instance at a time, so
    # this overlap is ~40 % of a C-GET association's speed). Only for C-GET:
    # the association is ours and the sub-operation counts come back to us. A
    # write that then fails is counted (``StoreCounters.unwritten``), and the
    # row that asked for it is incomplete, never taken as done.
    answers_first = False

    def __init__(self, staging_dir: Path) -> None:
        self.staging_dir = staging_dir
        self.root = str(staging_dir)  # paths are built as strings: pathlib costs per instance
        # Each instance is written here first, then renamed to its place.
        self.incoming = staging_dir / ".incoming"
        self.incoming.mkdir(parents=True, exist_ok=True)
        self.incoming_path = str(self.incoming)
        self.counters = StoreCounters()
        self._names = itertools.count()
        self._prefix = f"{TEMP_PREFIX}{os.getpid()}-"
        # Each association (a thread of the SCP) keeps its study folders' indexes open.
        self._indexes = threading.local()

    def temp_name(self) -> str:
        return f"{self._prefix}{next(self._names)}.part"

    def destination(self, keys: dict[str, str], sop_uid: str) -> str:
        """Where the instance goes, relative to ``self.root``, '/'-separated."""
        return f"{study_name(keys['StudyInstanceUID'])}/{instance_name(sop_uid)}"

    def keeps(self, relative: str) -> bool:
        """Whether what is at ``relative`` stays, and a new arrival is dropped."""
        return False

    def placed(self, relative: str, keys: dict[str, str], size: int, inode: int) -> None:
        """Called after each instance is in place: noted in its study folder's
        index (see ``staging``), so the worker need not read it again."""
        index = getattr(self._indexes, "writer", None)
        if index is None:
            index = self._indexes.writer = IndexWriter()
        folder, _, name = relative.rpartition("/")
        index.append(f"{self.root}/{folder}", name, inode, size, keys)

    def keep(self, pending: _PendingStore, keys: dict[str, str]) -> None:
        """Keep a received data set (its ``keys`` read): written whole under a
        temp name, then renamed to its place (``destination``)."""
        pending._name(pending._store(), keys)

    def association_ended(self) -> None:
        """Called by the thread that served an association when it ends."""
        index = getattr(self._indexes, "writer", None)
        if index is not None:
            index.close()

    def begin(self, conn: Connection, context_id: int, command: dict[int, object]) -> _PendingStore:
        return _PendingStore(self, conn, context_id, command)


class Placed(NamedTuple):
    """An instance in its place (a named tuple: one is made per instance received)."""

    path: str  # relative to the project folder, '/'-separated
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    modality: str
    size: int
    sop_class_uid: str = ""
    transfer_syntax: str = ""  # as it came, and as the file meta names it
    # Pseudonymised (pulls.deid): the keys above are as written; these are the
    # originals the row asked for (its bookkeeping) and the mapping keeps.
    source_patient_id: str = ""
    source_study_uid: str = ""
    source_series_uid: str = ""
    source_accession: str = ""
    shift_days: int = 0
    # Why it may show burned-in text (kept, flagged), or, with ``withheld``, why
    # it was set aside instead (``path`` is then where it waits, outside the project).
    burned_in: str = ""
    withheld: bool = False

    @property
    def asked_study(self) -> str:
        """The study UID as the PACS knows it (the row's)."""
        return self.source_study_uid or self.study_instance_uid

    @property
    def asked_series(self) -> str:
        return self.source_series_uid or self.series_instance_uid


# In a project's folder: C-GET instances of a study (series) that the C-GET did
# not ask for, until they are moved to quarantine (``quarantine``). A layout
# path never starts with a dot (``paths.safe_name``).
UNREQUESTED = ".unrequested"


class ProjectWriter(InstanceWriter):
    """Writes C-GET instances straight to their place in a project's folder.

    The layout is ``paths.layout_relpath``; there is no staging step, because the
    association that receives them belongs to one job. Each placed instance is
    kept in ``self.placed_instances`` for the caller to record. Once told what
    the C-GET asks for (``expect``), an instance of another study or series
    goes to ``UNREQUESTED/<study>/`` instead, listed in ``self.unrequested``:
    it never enters the project's layout.
    """

    notes_inodes = False  # recorded from placed_instances: no index, no fstat
    answers_first = True  # C-GET: the association, and the answers' counts, are ours

    def __init__(self, project_dir: Path) -> None:
        super().__init__(project_dir)
        self.placed_instances: list[Placed] = []
        self.unrequested: list[Placed] = []
        self._studies: frozenset[str] | None = None
        self._series: str | None = None
        # While set, an instance already in its place is kept and the one that
        # arrives again is dropped (a C-GET done again one transfer syntax at a
        # time, see ``getting``: what arrived as stored is not replaced).
        self.keep_existing = False

    def expect(self, study: str | None, series: str | None = None) -> None:
        """The study (and series) the next C-GET asks for; None: place anything."""
        self._studies = None if study is None else frozenset((study,))
        self._series = series or None

    def expect_studies(self, studies: Iterable[str]) -> None:
        """The studies the next C-GET asks for, in a UID list (study_lists)."""
        self._studies, self._series = frozenset(studies), None

    def _asked_for(self, keys: dict[str, str]) -> bool:
        return self._studies is None or (
            keys["StudyInstanceUID"] in self._studies
            and (self._series is None or keys["SeriesInstanceUID"] == self._series)
        )

    def keeps(self, relative: str) -> bool:
        return self.keep_existing and os.path.exists(f"{self.root}/{relative}")

    def destination(self, keys: dict[str, str], sop_uid: str) -> str:
        if self._asked_for(keys):
            return layout_relpath(keys, fallback_sop=sop_uid)
        return f"{UNREQUESTED}/{study_name(keys['StudyInstanceUID'])}/{instance_name(sop_uid)}"

    def placed(self, relative: str, keys: dict[str, str], size: int, inode: int) -> None:
        (self.placed_instances if self._asked_for(keys) else self.unrequested).append(
            Placed(
                path=relative,
                patient_id=keys["PatientID"],
                study_instance_uid=keys["StudyInstanceUID"],
                series_instance_uid=keys["SeriesInstanceUID"],
                sop_instance_uid=keys["SOPInstanceUID"],
                modality=keys["Modality"],
                size=size,
                sop_class_uid=keys.get("SOPClassUID", ""),
                transfer_syntax=keys.get("TransferSyntaxUID", ""),
            )
        )


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
# Buffers per writev (Linux allows 1024).
_IOV_MAX = 512


def create_file(folder: str, name: str) -> int:
    try:
        return os.open(f"{folder}/{name}", _CREATE_FLAGS, 0o640)
    except FileNotFoundError:  # first instance of the study, or the area was cleaned
        os.makedirs(folder, exist_ok=True)
        return os.open(f"{folder}/{name}", _CREATE_FLAGS, 0o640)


def write_all(fd: int, parts: list) -> None:
    """Write the parts in order with as few system calls as the kernel allows."""
    for start in range(0, len(parts), _IOV_MAX):
        group = parts[start : start + _IOV_MAX]
        left = sum(len(part) for part in group) - os.writev(fd, group)
        if left:  # a short write (rare): the rest, in order
            rest = memoryview(b"".join(group))[-left:]
            while rest:
                rest = rest[os.write(fd, rest) :]


def _head(chunks: list[memoryview]) -> bytes | memoryview:
    """The first HEAD_SIZE bytes of a data set in fragments (the one fragment as it is)."""
    if len(chunks) == 1:
        return chunks[0]
    parts, size = [], 0
    for chunk in chunks:
        parts.append(chunk)
        size += len(chunk)
        if size >= HEAD_SIZE:
            break
    return b"".join(parts)[:HEAD_SIZE]


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
        # The data set's fragments as they came: views of the PDUs' bytes, which
        # nothing changes (no copy until they are written).
        self.chunks: list[memoryview] = []
        self.head = b""  # the data set's first bytes, kept once it is spilled
        self.spill: io.BufferedWriter | None = None
        self.spill_path: Path | None = None
        self.inode = 0  # of the written file, for the staging index
        sop_class, self.transfer_syntax = conn.accepted.contexts.get(context_id, ("", ""))
        self.header = file_header(
            sop_class=str(command.get(0x0002, sop_class)),
            sop_instance=str(command.get(0x1000, "")),
            transfer_syntax=self.transfer_syntax,
            source_ae=conn.accepted.calling_ae,
        )

    def _fail(self, exc: OSError) -> None:
        self.status = (
            STATUS_OUT_OF_RESOURCES if exc.errno in _NO_SPACE else STATUS_PROCESSING_FAILURE
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
            self.chunks.append(data)
            if self.size > SPILL_AT:
                self.head = _head(self.chunks)
                name = self.owner.temp_name()
                fd = create_file(self.owner.incoming_path, name)
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

    def _keys(self) -> dict[str, str]:
        """The data set's keys (and its SOP class and transfer syntax, as the
        command and the context name them)."""
        keys = self._dataset_keys()
        keys["SOPClassUID"] = str(self.command.get(0x0002, ""))
        keys["TransferSyntaxUID"] = self.transfer_syntax
        return keys

    def _dataset_keys(self) -> dict[str, str]:
        """The data set's keys: from its head, else (rarely) with pydicom from the
        whole of it, in memory or in the spill file (closed first, complete)."""
        if self.spill is not None:
            if self.owner.notes_inodes:
                self.inode = os.fstat(self.spill.fileno()).st_ino
            self.spill.close()
            self.spill = None
            head, whole = self.head, None
        else:
            head, whole = _head(self.chunks), self.chunks
        found = keys_from_head(head, self.transfer_syntax)
        if found is not None:
            return found
        source = (
            io.BytesIO(b"".join([self.header, *whole])) if whole is not None else self.spill_path
        )
        ds = dcmread(source, stop_before_pixels=True, specific_tags=KEYWORDS)
        return {key: str(ds.get(key, "") or "") for key in KEYWORDS}

    def _store(self) -> str:
        """The whole file written and closed under a temp name in ``.incoming``."""
        if self.spill_path is not None:  # spilled: it is there already
            temp, self.spill_path = str(self.spill_path), None
            return temp
        chunks, self.chunks = self.chunks, []
        name = self.owner.temp_name()
        incoming = self.owner.incoming_path
        fd = create_file(incoming, name)
        temp = f"{incoming}/{name}"
        try:
            try:
                write_all(fd, [self.header, *chunks])
                if self.owner.notes_inodes:
                    self.inode = os.fstat(fd).st_ino
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return temp

    def dataset_bytes(self) -> bytes:
        """The data set as it came (from memory, or from the spill file, which
        goes): for a writer that keeps something else than these bytes."""
        if self.spill_path is not None:
            path, self.spill_path = self.spill_path, None
            try:
                with open(path, "rb") as fh:
                    fh.seek(len(self.header))
                    return fh.read()
            finally:
                path.unlink(missing_ok=True)
        chunks, self.chunks = self.chunks, []
        return b"".join(chunks)

    @property
    def sop_uid(self) -> str:
        return str(self.command.get(0x1000, ""))

    @property
    def sop_class(self) -> str:
        return str(self.command.get(0x0002, ""))

    def _name(self, temp: str, keys: dict[str, str]) -> None:
        """Rename the written file to its place, and note it."""
        relative = self.owner.destination(keys, str(self.command.get(0x1000, "")))
        final = f"{self.owner.root}/{relative}"
        if self.owner.keeps(relative):
            os.unlink(temp)
            return
        try:
            try:
                os.replace(temp, final)
            except FileNotFoundError:  # the first instance of its folder (or it was swept)
                for attempt in range(3):  # a sweep may remove the folder again meanwhile
                    os.makedirs(final.rpartition("/")[0], exist_ok=True)
                    try:
                        os.replace(temp, final)
                        break
                    except FileNotFoundError:
                        if attempt == 2 or not os.path.exists(temp):
                            raise
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self.owner.placed(relative, keys, len(self.header) + self.size, self.inode)

    def _answer(self) -> None:
        self.conn.send_message(
            self.context_id,
            encode_store_response(
                sop_class=str(self.command.get(0x0002, "")),
                message_id=int(self.command.get(0x0110, 0)),
                status=self.status,
                sop_instance=str(self.command.get(0x1000, "")),
            ),
        )

    def finish(self) -> None:
        """Keep the data set and answer the peer, in the order of
        ``InstanceWriter.answers_first``."""
        keys = None
        if self.status == STATUS_SUCCESS:
            try:
                keys = self._keys()
                if not self.owner.answers_first:
                    self.owner.keep(self, keys)
            except OSError as exc:
                self._fail(exc)
            except Exception as exc:  # noqa: BLE001  (an unreadable data set is the peer's fault)
                log.warning("received data set unreadable: %s", type(exc).__name__)
                self.status = STATUS_PROCESSING_FAILURE
                self.discard()
        self._answer()
        if self.status != STATUS_SUCCESS or not self.owner.answers_first:
            self.owner.counters.add(ok=self.status == STATUS_SUCCESS, size=self.size)
            return
        try:
            self.owner.keep(self, keys)
        except OSError as exc:
            # Answered already: counted as not written, so the row that asked for
            # it is incomplete (and a full disk pauses its job).
            log.error("could not write a received instance: %s", exc.strerror)
            self.discard()
            self.owner.counters.add(ok=False, size=self.size, unwritten=exc)
            return
        self.owner.counters.add(ok=True, size=self.size)
