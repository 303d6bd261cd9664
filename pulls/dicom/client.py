"""Client associations: one association serves many operations (a batch).

C-ECHO, C-FIND (streaming its matches), C-MOVE (reporting each pending
response) and C-GET (receiving the instances on the same association), on the
blocking connection of ``wire`` (TCP_NODELAY on every socket). Measured on this
machine against Orthanc: pynetdicom's Association runs about 240-290 C-FIND/s
and 0.4-0.6x DCMTK's retrieval rate, its reactors polling with 1 ms sleeps; a
blocking connection answers as fast as the PACS sends.

Errors are typed (``errors``) and say what to do: which AE title to register,
which host and port, which timeout was hit.
"""

from __future__ import annotations

import contextlib
import io
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom.sop_class import Verification

from pulls.dicom import statuses
from pulls.dicom.commands import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_GET_RSP,
    C_MOVE_RQ,
    C_MOVE_RSP,
    NO_DATASET,
    encode_command,
)
from pulls.dicom.encoding import encode_identifier
from pulls.dicom.errors import (
    PacsAborted,
    PacsRejected,
    PacsStatusError,
    PacsTimeout,
    PacsUnavailable,
    error_details,
    rejection_error,
)
from pulls.dicom.pacing import ResponsePacing
from pulls.dicom.peer import Peer
from pulls.dicom.proposals import (
    FIND_MODELS,
    GET_MODELS,
    MOVE_MODELS,
    association_request,
    storage_classes_fitting,
    storage_classes_named,
    storage_fits,
)
from pulls.dicom.receiving import InstanceWriter, StoreCounters
from pulls.dicom.results import EchoResult, Progress, ProgressCallback, RetrieveResult
from pulls.dicom.wire import Connection, PeerGone

# Abstract syntaxes of an association that are not storage classes.
_NOT_STORAGE = frozenset(
    [str(Verification)]
    + [str(uid) for models in (FIND_MODELS, GET_MODELS, MOVE_MODELS) for uid in models.values()]
)
# Pending responses we accept after a C-CANCEL before aborting the association.
_CANCEL_GRACE = 5


def _uid_list(ds: Dataset, keyword: str) -> list[str]:
    if keyword not in ds:
        return []
    elem = ds[keyword]
    values = elem.value if elem.VM > 1 else [elem.value]
    return [str(v) for v in values if v]


class Session:
    """One association to a PACS; use as a context manager, run many operations.

    >>> with Session(peer, services=("find", "move")) as s:
    ...     matches = list(s.find(query))

    ``services`` chooses the presentation contexts proposed: "echo", "find",
    "move", "get" (C-GET needs ``staging_dir``, where instances land as
    ``<study>/<sop>.dcm``, or a ``writer`` that decides, such as
    ``receiving.ProjectWriter``).
    """

    def __init__(
        self,
        peer: Peer,
        *,
        services: Sequence[str] = ("echo",),
        staging_dir: Path | None = None,
        writer: InstanceWriter | None = None,
        before_query: Callable[[], None] | None = None,
        storage_classes: Iterable[str] | None = None,
    ) -> None:
        if writer is None and staging_dir is not None:
            writer = InstanceWriter(staging_dir)
        if "get" in services and writer is None:
            raise ValueError("a session for C-GET needs a staging_dir or a writer")
        self.peer = peer
        self.services = tuple(services)
        self.writer = writer
        # Called before every C-FIND request: the caller's rate limit waits here.
        self.before_query = before_query
        # C-GET: the storage classes proposed (None: the broad set; see
        # proposals and propose_storage), as many of them as fit.
        self.storage_classes = storage_classes_fitting(
            self.services, storage_classes_named(storage_classes)
        )
        # C-GET: one transfer syntax alone offered per class (getting), else None.
        self.storage_syntax: str | None = None
        # C-GET: the PACS named a study's SOP classes wrongly (its lists are not
        # trusted for the rest of the session); it does not name them at IMAGE
        # level (not asked again on this session: each query is one of its tokens).
        self.class_lists_wrong = False
        self.names_no_classes = False
        # C-GET: the PACS failed a C-GET naming several studies, or matched
        # nothing to it (study_lists): one study per C-GET from then on.
        self.study_lists_refused = False
        self.conn: Connection | None = None
        self._messages: Iterator | None = None
        self._msg_id = 0

    @property
    def counters(self) -> StoreCounters | None:
        """Instances received by C-GET on this session."""
        return self.writer.counters if self.writer else None

    # --- association ----------------------------------------------------------

    def __enter__(self) -> Session:
        self._open()
        return self

    def _open(self) -> None:
        peer = self.peer
        started = time.monotonic()
        try:
            sock = socket.create_connection((peer.host, peer.port), timeout=peer.connect_timeout)
        except OSError:
            timed_out = time.monotonic() - started >= peer.connect_timeout * 0.9
            raise self._connect_error(timed_out=timed_out) from None
        conn = Connection(sock, timeout=peer.acse_timeout)
        try:
            answer = conn.request_association(
                calling_ae=peer.calling_ae,
                called_ae=peer.called_ae,
                request=self._association_request(),
            )
        except TimeoutError:
            conn.close()
            raise PacsTimeout(
                f"{peer.describe()} did not answer the association request within "
                f"{peer.acse_timeout:g} s"
            ) from None
        except (PeerGone, OSError):
            conn.close()
            raise PacsAborted(
                f"{peer.describe()} aborted the association request: the PACS may not know "
                f"the calling AE title {peer.calling_ae!r} or supports none of the proposed "
                "services"
            ) from None
        if answer.result != 0x00:
            conn.close()
            raise rejection_error(peer, answer)
        if not conn.accepted.contexts:
            conn.abort()
            conn.close()
            raise PacsRejected(
                f"{peer.describe()} accepted none of the proposed services "
                f"({', '.join(self.services) or 'storage of the SOP classes sent'})",
                result=0,
                source=0,
                reason=0,
            )
        conn.set_timeout(peer.dimse_timeout)
        self.conn = conn
        self._messages = conn.messages(self.writer)

    def _association_request(self):
        return association_request(
            self.peer.calling_ae,
            self.peer.called_ae,
            self.services,
            self.storage_classes,
            self.storage_syntax,
        )

    def propose_storage(
        self, classes: Iterable[str] | None, *, only_syntax: str | None = None
    ) -> bool:
        """Make sure a C-GET on this session can receive instances of ``classes``
        (None: of the broad set), in every transfer syntax (``only_syntax``: in
        that one alone): if the association does not propose them, it is
        released and a new one proposes them (with the ones it had, where they
        all fit). False, and nothing changed, when ``classes`` alone take more
        contexts than an association has: the caller retrieves in parts."""
        wanted = storage_classes_named(classes)
        current = self.storage_classes
        if only_syntax == self.storage_syntax and (
            wanted == current
            or (wanted is not None and current is not None and set(wanted) <= set(current))
        ):
            return True
        if wanted is not None and only_syntax is None and not storage_fits(self.services, wanted):
            return False
        if wanted is not None and current is not None and only_syntax is None:
            both = storage_classes_named([*current, *wanted])
            if storage_fits(self.services, both):
                wanted = both
        self._close(graceful=True)
        self.storage_classes = wanted
        self.storage_syntax = only_syntax
        self._open()
        return True

    def offers_storage(self) -> bool:
        """Whether the PACS accepted any storage context (C-GET) on this association."""
        models = {
            str(uid) for models in (FIND_MODELS, GET_MODELS, MOVE_MODELS) for uid in models.values()
        }
        return any(
            syntax not in models and syntax != str(Verification)
            for syntax, _ in self._require().accepted.contexts.values()
        )

    def _connect_error(self, *, timed_out: bool) -> PacsUnavailable:
        peer = self.peer
        if timed_out:
            return PacsUnavailable(
                f"could not connect to {peer.host}:{peer.port} within "
                f"{peer.connect_timeout:g} s: check host, port and firewall"
            )
        return PacsUnavailable(
            f"could not connect to {peer.host}:{peer.port} (connection refused or "
            "unreachable): is the PACS running and is the port right?"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(graceful=exc_type is None)

    def _close(self, *, graceful: bool) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if graceful:
                conn.set_timeout(self.peer.acse_timeout)
                conn.release()
                for _ in self._messages:  # until the A-RELEASE-RP
                    pass
            else:
                conn.abort()
        except (PeerGone, OSError):
            pass
        finally:
            conn.close()

    # --- messages --------------------------------------------------------------

    def _require(self) -> Connection:
        if self.conn is None:
            raise PacsAborted(f"the association with {self.peer.describe()} is not open")
        return self.conn

    def _next_msg_id(self) -> int:
        self._msg_id = self._msg_id % 65535 + 1
        return self._msg_id

    def _context(self, operation: str, uid: str) -> tuple[int, UID]:
        found = self._require().context_for(str(uid))
        if found is None:
            raise PacsStatusError(operation, statuses.SOP_CLASS_NOT_SUPPORTED)
        return found[0], UID(found[1])

    def _send(
        self, context_id: int, ts: UID, command: dict[int, object], identifier: Dataset | None
    ) -> None:
        data = None if identifier is None else encode_identifier(identifier, ts)
        self._require().send_message(context_id, encode_command(command), data)

    def _response(
        self, operation: str, response: int, msg_id: int, *, timeout: float | None = None
    ) -> tuple[dict[int, object], bytes | None]:
        """The next response to ``msg_id``; C-STOREs of a C-GET are handled on the way.

        ``timeout`` is the longest silence allowed: the DIMSE timeout for
        request/response operations, the network timeout between the
        sub-operations of a C-MOVE or C-GET (a PACS may fetch from slow storage).
        """
        timeout = self.peer.dimse_timeout if timeout is None else timeout
        self._require().set_timeout(timeout)
        while True:
            try:
                _, fields, dataset = next(self._messages)
            except StopIteration:
                self.conn = None
                raise PacsAborted(
                    f"{self.peer.describe()} released the association during {operation}"
                ) from None
            except TimeoutError:
                # The association's state is unknown now: abort it, do not reuse it.
                if self.conn is not None:
                    self.conn.abort()
                    self.conn.close()
                    self.conn = None
                raise PacsTimeout(
                    f"{self.peer.describe()} did not answer {operation} within {timeout:g} s"
                ) from None
            except (PeerGone, OSError):
                self.conn = None
                raise PacsAborted(
                    f"{self.peer.describe()} aborted the association during {operation}: "
                    f"a PACS that does not know the calling AE title {self.peer.calling_ae!r} "
                    "(Orthanc: DicomModalities) may do this; ask for it to be registered"
                ) from None
            if fields.get(0x0100) == response and fields.get(0x0120) == msg_id:
                return fields, dataset

    def _cancel(self, context_id: int, msg_id: int) -> None:
        command = {0x0100: C_CANCEL_RQ, 0x0120: msg_id, 0x0800: NO_DATASET}
        self._require().send_message(context_id, encode_command(command))

    # --- operations --------------------------------------------------------------

    def echo(self) -> EchoResult:
        started = time.monotonic()
        context_id, ts = self._context("C-ECHO", Verification)
        msg_id = self._next_msg_id()
        self._send(
            context_id,
            ts,
            {0x0002: str(Verification), 0x0100: C_ECHO_RQ, 0x0110: msg_id, 0x0800: NO_DATASET},
            None,
        )
        fields, _ = self._response("C-ECHO", C_ECHO_RSP, msg_id)
        status = int(fields.get(0x0900, 0xC000))
        if status != statuses.SUCCESS:
            raise PacsStatusError("C-ECHO", status)
        return EchoResult(status=status, seconds=time.monotonic() - started)

    def find(self, identifier: Dataset, *, model: str = "S") -> Iterator[Dataset]:
        """Run one C-FIND and yield each match as it arrives.

        A caller that stops early gets the C-FIND cancelled and its remaining
        responses drained, so the next operation on this association does not
        read them as its own.
        """
        with contextlib.closing(self.find_raw(identifier, model=model)) as matches:
            for data, ts in matches:
                yield read_dataset(io.BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)

    def find_raw(self, identifier: Dataset, *, model: str = "S") -> Iterator[tuple[bytes, UID]]:
        """``find``, yielding each match as it came: its bytes and transfer syntax
        (for callers that need a key or two, not a decoded data set)."""
        uid = str(FIND_MODELS[model])
        context_id, ts = self._context("C-FIND", uid)
        if self.before_query is not None:
            self.before_query()
        msg_id = self._next_msg_id()
        command = {0x0002: uid, 0x0100: C_FIND_RQ, 0x0110: msg_id, 0x0700: 0, 0x0800: 0}
        self._send(context_id, ts, command, identifier)
        finished = False
        try:
            while True:
                fields, dataset = self._response("C-FIND", C_FIND_RSP, msg_id)
                status = int(fields.get(0x0900, 0xC000))
                if statuses.is_pending(status):
                    if dataset:
                        yield dataset, ts
                    continue
                finished = True
                if status in (statuses.SUCCESS, statuses.CANCEL):
                    return
                raise PacsStatusError("C-FIND", status, **error_details(fields))
        finally:
            if not finished and self.conn is not None:
                self._cancel(context_id, msg_id)
                while True:
                    fields, _ = self._response("C-FIND", C_FIND_RSP, msg_id)
                    if not statuses.is_pending(int(fields.get(0x0900, 0))):
                        break

    def _retrieve(
        self,
        operation: str,
        response: int,
        *,
        context_id: int,
        ts: UID,
        msg_id: int,
        on_progress: ProgressCallback | None,
        pacing: ResponsePacing | None = None,
    ) -> RetrieveResult:
        """The responses to ``msg_id`` up to the final one; ``pacing``: read them
        in batches (C-MOVE only, see ``pacing``)."""
        started = time.monotonic()
        progress = Progress()
        cancelled = False
        after_cancel = 0
        while True:
            fields, dataset = self._response(
                operation, response, msg_id, timeout=self.peer.network_timeout
            )
            status = int(fields.get(0x0900, 0xC000))
            progress.responses += 1
            if 0x1020 in fields:
                progress.remaining = int(fields[0x1020])
            progress.completed = int(fields.get(0x1021, progress.completed))
            progress.failed = int(fields.get(0x1022, progress.failed))
            progress.warning = int(fields.get(0x1023, progress.warning))
            if not statuses.is_pending(status):
                break
            if cancelled:
                after_cancel += 1
                if after_cancel > _CANCEL_GRACE:
                    # The PACS ignores C-CANCEL: stop it the hard way.
                    self._require().abort()
                    self.conn.close()
                    self.conn = None
                    raise PacsAborted(
                        f"{self.peer.describe()} ignored the C-CANCEL of the {operation}: "
                        "the association was aborted"
                    )
            elif on_progress is not None and on_progress(progress) is False:
                self._cancel(context_id, msg_id)
                cancelled = True
            if pacing is not None and not cancelled and not self._require().buffered:
                pause = pacing.wait(
                    time.monotonic(),
                    completed=progress.completed + progress.failed + progress.warning,
                    remaining=int(fields[0x1020]) if 0x1020 in fields else None,
                )
                if pause:
                    time.sleep(pause)
        failed_uids: list[str] = []
        if dataset:
            ds = read_dataset(io.BytesIO(dataset), ts.is_implicit_VR, ts.is_little_endian)
            failed_uids = _uid_list(ds, "FailedSOPInstanceUIDList")
        if on_progress is not None:
            on_progress(progress)
        result = RetrieveResult(
            status=status,
            completed=progress.completed,
            failed=progress.failed,
            warning=progress.warning,
            failed_sop_uids=failed_uids,
            responses=progress.responses,
            seconds=time.monotonic() - started,
            cancelled=cancelled or status == statuses.CANCEL,
        )
        if status in (statuses.SUCCESS, statuses.WARNING_SUBOPS, statuses.CANCEL):
            return result
        raise PacsStatusError(operation, status, **error_details(fields))

    def move(
        self,
        identifier: Dataset,
        *,
        destination: str,
        destination_address: tuple[str, int] | None = None,
        model: str = "S",
        on_progress: ProgressCallback | None = None,
    ) -> RetrieveResult:
        """C-MOVE to ``destination``; ``on_progress`` gets each pending response and
        may return False to cancel (C-CANCEL). ``destination_address`` (where our
        storage SCP listens) only makes the error for an unknown destination precise."""
        uid = str(MOVE_MODELS[model])
        context_id, ts = self._context("C-MOVE", uid)
        msg_id = self._next_msg_id()
        command = {
            0x0002: uid,
            0x0100: C_MOVE_RQ,
            0x0110: msg_id,
            0x0600: destination,
            0x0700: 0,
            0x0800: 0,
        }
        self._send(context_id, ts, command, identifier)
        try:
            return self._retrieve(
                "C-MOVE",
                C_MOVE_RSP,
                context_id=context_id,
                ts=ts,
                msg_id=msg_id,
                on_progress=on_progress,
                pacing=ResponsePacing(),
            )
        except PacsStatusError as exc:
            if exc.status in (statuses.MOVE_DESTINATION_UNKNOWN, statuses.UNABLE_TO_PROCESS):
                where = (
                    f" at {destination_address[0]} port {destination_address[1]}"
                    if destination_address
                    else ""
                )
                exc.args = (
                    f"{exc.args[0]}. On {self.peer.describe()}, register the move destination "
                    f"AE title {destination!r}{where} (Orthanc: DicomModalities; "
                    "DCMTK: HostTable)",
                )
            raise

    def get(
        self,
        identifier: Dataset,
        *,
        model: str = "S",
        on_progress: ProgressCallback | None = None,
    ) -> RetrieveResult:
        """C-GET: the PACS sends the instances on this association; they are
        written to the staging folder. ``on_progress`` as for ``move``."""
        uid = str(GET_MODELS[model])
        context_id, ts = self._context("C-GET", uid)
        msg_id = self._next_msg_id()
        command = {0x0002: uid, 0x0100: C_GET_RQ, 0x0110: msg_id, 0x0700: 0, 0x0800: 0}
        counters = self.writer.counters
        before = counters.unwritten, counters.unwritten_no_space
        self._send(context_id, ts, command, identifier)
        result = self._retrieve(
            "C-GET", C_GET_RSP, context_id=context_id, ts=ts, msg_id=msg_id, on_progress=on_progress
        )
        result.unwritten = counters.unwritten - before[0]
        result.no_space = counters.unwritten_no_space > before[1]
        return result


def echo(peer: Peer) -> EchoResult:
    """Open an association, send one C-ECHO, release."""
    with Session(peer, services=("echo",)) as session:
        return session.echo()
