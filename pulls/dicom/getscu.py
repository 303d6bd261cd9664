"""C-GET on the lean receive path: the PACS sends the instances on our association.

The SCU proposes every storage SOP class in the SCP role (PS3.4 C.4.3.1,
``build_role(..., scp_role=True)``), at most 128 contexts in all. Received
instances go to ``staging/<study>/<sop>.dcm`` exactly as the storage SCP writes
them. One association serves many C-GETs.
"""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path
from types import TracebackType

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID
from pynetdicom import build_role
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext

from pulls.dicom import statuses
from pulls.dicom.client import (
    GET_MODELS,
    GET_STORAGE_CLASSES,
    Peer,
    Progress,
    ProgressCallback,
    RetrieveResult,
    aborted_at_association,
    connect_error,
    rejection_error,
)
from pulls.dicom.errors import PacsAborted, PacsStatusError, PacsTimeout
from pulls.dicom.transfer_syntaxes import PREFERRED_TRANSFER_SYNTAXES
from pulls.dicom.wire import (
    C_CANCEL_RQ,
    C_GET_RQ,
    C_GET_RSP,
    NO_DATASET,
    Connection,
    InstanceWriter,
    PeerGone,
    StoreCounters,
    encode_command,
)

_QUERY_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def _contexts() -> list[PresentationContext]:
    contexts = []
    for uid in list(GET_MODELS.values()):
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = list(_QUERY_SYNTAXES)
        contexts.append(cx)
    for uid in GET_STORAGE_CLASSES:
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = list(PREFERRED_TRANSFER_SYNTAXES)
        contexts.append(cx)
    return contexts


class GetSession:
    """One association for many C-GETs; instances land in ``staging_dir``."""

    def __init__(self, peer: Peer, *, staging_dir: Path) -> None:
        self.peer = peer
        self.writer = InstanceWriter(staging_dir)
        self.conn: Connection | None = None
        self._messages = None
        self._msg_id = 0

    @property
    def counters(self) -> StoreCounters:
        return self.writer.counters

    def __enter__(self) -> GetSession:
        peer = self.peer
        started = time.monotonic()
        try:
            sock = socket.create_connection((peer.host, peer.port), timeout=peer.connect_timeout)
        except TimeoutError:
            raise connect_error(peer, timed_out=True) from None
        except OSError:
            raise connect_error(
                peer, timed_out=time.monotonic() - started >= peer.connect_timeout * 0.9
            ) from None
        conn = Connection(sock, timeout=peer.acse_timeout)
        roles = [build_role(uid, scp_role=True) for uid in GET_STORAGE_CLASSES]
        try:
            answer = conn.request_association(
                calling_ae=peer.calling_ae,
                called_ae=peer.called_ae,
                contexts=_contexts(),
                extra_user_information=roles,
            )
        except TimeoutError:
            conn.close()
            raise PacsTimeout(
                f"{peer.describe()} did not answer the association request within "
                f"{peer.acse_timeout:g} s"
            ) from None
        except (PeerGone, OSError):
            conn.close()
            raise aborted_at_association(peer) from None
        if answer.result != 0x00:
            conn.close()
            raise rejection_error(peer, answer)
        conn.sock.settimeout(peer.dimse_timeout)
        self.conn = conn
        self._messages = conn.messages(self.writer)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if exc_type is None:
                conn.release()
                for _ in self._messages:  # until A-RELEASE-RP
                    pass
            else:
                conn.abort()
        except (PeerGone, OSError):
            pass
        finally:
            conn.close()

    def _next(self, operation: str, waiting_since: float):
        try:
            return next(self._messages)
        except StopIteration:
            raise PacsAborted(
                f"{self.peer.describe()} released the association during {operation}"
            ) from None
        except TimeoutError:
            raise PacsTimeout(
                f"{self.peer.describe()} did not answer {operation} within "
                f"{self.peer.dimse_timeout:g} s"
            ) from None
        except (PeerGone, OSError) as exc:
            raise PacsAborted(
                f"{self.peer.describe()} aborted the association during {operation} ({exc})"
            ) from None

    def get(
        self,
        identifier: Dataset,
        *,
        model: str = "S",
        on_progress: ProgressCallback | None = None,
    ) -> RetrieveResult:
        """C-GET; ``on_progress`` gets each pending response and may return False
        to cancel (C-CANCEL)."""
        conn = self.conn
        if conn is None:
            raise PacsAborted(f"the association with {self.peer.describe()} is not open")
        sop_class = str(GET_MODELS[model])
        found = conn.context_for(sop_class)
        if found is None:
            raise PacsStatusError("C-GET", statuses.SOP_CLASS_NOT_SUPPORTED)
        context_id, transfer_syntax = found
        ts = UID(transfer_syntax)
        self._msg_id = self._msg_id % 65535 + 1
        msg_id = self._msg_id
        data = encode(identifier, ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
        command = {0x0002: sop_class, 0x0100: C_GET_RQ, 0x0110: msg_id, 0x0700: 0, 0x0800: 0}
        conn.send_message(context_id, encode_command(command), data)
        started = waiting_since = time.monotonic()
        progress = Progress()
        cancelled = False
        while True:
            _, fields, dataset = self._next("C-GET", waiting_since)
            waiting_since = time.monotonic()
            if fields.get(0x0100) != C_GET_RSP or fields.get(0x0120) != msg_id:
                continue
            status = int(fields.get(0x0900, 0xC000))
            progress.responses += 1
            if 0x1020 in fields:
                progress.remaining = int(fields[0x1020])
            progress.completed = int(fields.get(0x1021, progress.completed))
            progress.failed = int(fields.get(0x1022, progress.failed))
            progress.warning = int(fields.get(0x1023, progress.warning))
            if statuses.is_pending(status):
                if on_progress is not None and on_progress(progress) is False and not cancelled:
                    cancel = {0x0100: C_CANCEL_RQ, 0x0120: msg_id, 0x0800: NO_DATASET}
                    conn.send_message(context_id, encode_command(cancel))
                    cancelled = True
                continue
            break
        failed_uids: list[str] = []
        if dataset:
            ds = read_dataset(io.BytesIO(dataset), ts.is_implicit_VR, ts.is_little_endian)
            if "FailedSOPInstanceUIDList" in ds:
                elem = ds["FailedSOPInstanceUIDList"]
                values = elem.value if elem.VM > 1 else [elem.value]
                failed_uids = [str(v) for v in values if v]
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
        comment = fields.get(0x0902, "")
        raise PacsStatusError("C-GET", status, comment=str(comment or ""))
