"""A small pynetdicom PACS that misbehaves on purpose, as PACS in the field do."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from pulls.sandbox.procs import free_port


class ScriptedPacs:
    """Serves one study; ``behaviour`` decides how its C-MOVE lies.

    - "honest": sends every instance and says so;
    - "withhold": claims success but sends ``withhold`` instances fewer;
    - "fail_some": ``withhold`` sub-operations fail (status 0xB000);
    - "stall": never answers a C-FIND (the client must time out);
    - "slow": honest, but takes ``delay`` seconds per instance;
    - "resend": a C-GET sends its first ``withhold`` instances a second time;
    - "extra": a C-GET sends the first ``withhold`` instances of the other
      studies it holds after the study it was asked for (and counts them).

    ``pause``, when set, is called before each instance a C-MOVE or C-GET sends,
    with the retrieval's number (1 for the PACS's first C-MOVE or C-GET, 2 for
    the next, ...), the instance's index in it (0, 1, ...) and pynetdicom's
    event; it may block, to hold the transfer right there until the test has
    done what it is about (``until`` waits for a condition, bounded).

    It may hold several studies: queries and retrievals name one by its UID;
    with ``uid_lists`` a C-FIND may name several (a UID list), as Orthanc allows.
    A study C-FIND that asks for SOPClassesInStudy gets it, as from Orthanc;
    ``name_classes`` may change the list it names (a PACS that is wrong about it).
    """

    def __init__(
        self,
        files: list[Path],
        *,
        behaviour: str,
        destinations: dict[str, tuple[str, int]],
        withhold: int = 2,
        delay: float = 0.05,
        honour_cancel: bool = True,
        uid_lists: bool = False,
        name_classes: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        self.uid_lists = uid_lists
        self.name_classes = name_classes
        self.gets = 0
        # For each C-GET: how many presentation contexts its association proposed.
        self.proposed_at_get: list[int] = []
        self.datasets = [dcmread(p) for p in files]
        self.behaviour = behaviour
        self.destinations = destinations
        self.withhold = withhold
        self.delay = delay
        self.honour_cancel = honour_cancel
        self.open_associations = 0
        self.max_open_associations = 0
        self.associations = 0
        self.finds = 0
        self.moves = 0
        self.retrievals = 0  # C-MOVEs and C-GETs, in the order they came
        self.pause: Callable[[int, int, evt.Event], None] | None = None
        self._cancelled: list[evt.Event] = []
        self._count_lock = threading.Lock()
        self.port = free_port()
        self.ae_title = "SCRIPTED"
        self._server = None

    def _opened(self, event: evt.Event) -> None:
        with self._count_lock:
            self.associations += 1
            self.open_associations += 1
            self.max_open_associations = max(self.max_open_associations, self.open_associations)

    def _closed(self, event: evt.Event) -> None:
        with self._count_lock:
            self.open_associations -= 1

    def _study(self, identifier: Dataset) -> list[Dataset]:
        uid = str(identifier.get("StudyInstanceUID", "") or "")
        return [ds for ds in self.datasets if not uid or ds.StudyInstanceUID == uid]

    def _studies(self, identifier: Dataset) -> list[list[Dataset]]:
        """The studies a C-FIND or a C-GET names, one list of data sets each."""
        value = identifier.get("StudyInstanceUID", "")
        if not self.uid_lists or isinstance(value, str):
            found = self._study(identifier)
            return [found] if found else []
        named = {str(uid) for uid in value}
        studies: dict[str, list[Dataset]] = {}
        for ds in self.datasets:
            if ds.StudyInstanceUID in named:
                studies.setdefault(ds.StudyInstanceUID, []).append(ds)
        return list(studies.values())

    def _find(self, event: evt.Event):
        with self._count_lock:
            self.finds += 1
        if self.behaviour == "stall":
            time.sleep(30)
        if self.behaviour == "refuse":  # a failure with what PS3.7 C lets a PACS say
            status = Dataset()
            status.Status = 0xA900
            status.ErrorComment = "StudyDate not supported here"
            status.OffendingElement = [0x00080020]
            yield status, None
            return
        for datasets in self._studies(event.identifier):
            match = Dataset()
            match.QueryRetrieveLevel = "STUDY"
            match.StudyInstanceUID = datasets[0].StudyInstanceUID
            match.NumberOfStudyRelatedInstances = str(len(datasets))
            if "SOPClassesInStudy" in event.identifier:
                classes = sorted({str(ds.SOPClassUID) for ds in datasets})
                match.SOPClassesInStudy = (
                    self.name_classes(classes) if self.name_classes else classes
                )
            yield 0xFF00, match

    def _next_retrieval(self) -> int:
        with self._count_lock:
            self.retrievals += 1
            return self.retrievals

    def cancel_came(self, event: evt.Event) -> bool:
        """Whether the C-CANCEL of this C-MOVE or C-GET has come (pynetdicom
        answers that once, then forgets it: it is kept here)."""
        if any(seen is event for seen in self._cancelled):
            return True
        if event.is_cancelled:
            self._cancelled.append(event)
            return True
        return False

    def _paused(self, number: int, index: int, event: evt.Event) -> None:
        if self.pause is not None:
            self.pause(number, index, event)

    def _move(self, event: evt.Event):
        with self._count_lock:
            self.moves += 1
        number = self._next_retrieval()
        destination = self.destinations.get(str(event.move_destination).strip())
        if destination is None:
            yield None, None  # pynetdicom answers 0xA801
            return
        yield destination
        to_send = [ds for study in self._studies(event.identifier) for ds in study]
        if self.behaviour == "withhold":
            to_send = to_send[: -self.withhold]
        yield len(to_send)
        for n, ds in enumerate(to_send):
            self._paused(number, n, event)
            if self.honour_cancel and self.cancel_came(event):
                yield 0xFE00, None
                return
            if self.behaviour == "slow":
                time.sleep(self.delay)
            if self.behaviour == "fail_some" and n < self.withhold:
                broken = Dataset()
                broken.SOPClassUID = "1.2.3.4.5.6.7"  # nobody has a context for it
                broken.SOPInstanceUID = ds.SOPInstanceUID
                yield 0xFF00, broken
            else:
                yield 0xFF00, ds

    def _get(self, event: evt.Event):
        with self._count_lock:
            self.gets += 1
            self.proposed_at_get.append(len(event.assoc.requestor.requested_contexts))
        number = self._next_retrieval()
        if self.behaviour == "stall":
            time.sleep(30)
        to_send = [ds for study in self._studies(event.identifier) for ds in study]
        if self.behaviour == "withhold":
            to_send = to_send[: -self.withhold]
        elif self.behaviour == "resend":
            to_send = to_send + to_send[: self.withhold]
        elif self.behaviour == "extra":
            others = [ds for ds in self.datasets if ds not in to_send]
            to_send = to_send + others[: self.withhold]
        yield len(to_send)
        for n, ds in enumerate(to_send):
            self._paused(number, n, event)
            if self.honour_cancel and self.cancel_came(event):
                yield 0xFE00, None
                return
            if self.behaviour == "slow":
                time.sleep(self.delay)
            yield 0xFF00, ds

    @staticmethod
    def until(condition: Callable[[], object], *, timeout: float = 60) -> bool:
        """Wait (in a handler) until ``condition()`` holds; False if it did not
        within ``timeout`` (the transfer then goes on, and the test that needed
        the condition fails on what it checks)."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def start(self) -> ScriptedPacs:
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelMove)
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
        for ds in {
            (d.SOPClassUID, d.file_meta.TransferSyntaxUID): d for d in self.datasets
        }.values():
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            # C-GET: the storage classes come back in our SCU role (PS3.4 C.4.3.1)
            ae.add_supported_context(
                ds.SOPClassUID, ds.file_meta.TransferSyntaxUID, scu_role=True, scp_role=True
            )
        self._server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_FIND, self._find),
                (evt.EVT_C_MOVE, self._move),
                (evt.EVT_C_GET, self._get),
                (evt.EVT_CONN_OPEN, self._opened),
                (evt.EVT_CONN_CLOSE, self._closed),
            ],
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def __enter__(self) -> ScriptedPacs:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
