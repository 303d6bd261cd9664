"""Client associations: one association serves many operations (a batch).

Every socket gets TCP_NODELAY: without it each DIMSE exchange waits ~40 ms for
a delayed ACK (measured: 21 C-FIND/s without, 221/s with, Orthanc on loopback).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import AddressInformation, AssociationSocket

from pulls.dicom import statuses
from pulls.dicom.errors import (
    PacsAborted,
    PacsRejected,
    PacsStatusError,
    PacsTimeout,
    PacsUnavailable,
)

FIND_MODELS = {
    "S": StudyRootQueryRetrieveInformationModelFind,
    "P": PatientRootQueryRetrieveInformationModelFind,
}


@dataclass(frozen=True)
class Peer:
    """Where a PACS is and how to talk to it."""

    host: str
    port: int
    called_ae: str
    calling_ae: str
    connect_timeout: float = 10
    acse_timeout: float = 30
    dimse_timeout: float = 60
    network_timeout: float = 120
    max_pdu: int = 0  # 0: unlimited; the PACS caps what it sends at its own limit

    def describe(self) -> str:
        return f"{self.called_ae}@{self.host}:{self.port}"


class _NoDelaySocket(AssociationSocket):
    def _create_socket(self, address: AddressInformation) -> socket.socket:
        sock = super()._create_socket(address)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock


class _NoDelayAE(AE):
    def _create_socket(self, assoc, address, tls_args):  # type: ignore[override]
        sock = _NoDelaySocket(assoc, address=address)
        sock.tls_args = tls_args
        return sock


@dataclass
class EchoResult:
    status: int
    seconds: float


@dataclass
class _Connection:
    opened_at: float | None = None


def _raise_for_failed_association(
    assoc: Association, peer: Peer, conn: _Connection, elapsed: float
) -> None:
    if assoc.is_rejected:
        rsp = assoc.acceptor.primitive
        reason = rsp.reason_str
        hint = ""
        if rsp.result_source == 1 and rsp.diagnostic == 3:
            hint = f": register the calling AE title {peer.calling_ae!r} on the PACS"
        elif rsp.result_source == 1 and rsp.diagnostic == 7:
            hint = f": the PACS is not called {peer.called_ae!r}; check the node's AE title"
        raise PacsRejected(
            f"{peer.describe()} rejected the association ({rsp.result_str}, "
            f"{rsp.source_str}): {reason}{hint}",
            result=rsp.result,
            source=rsp.result_source,
            reason=rsp.diagnostic,
        )
    if conn.opened_at is None:
        if elapsed >= peer.connect_timeout * 0.9:
            raise PacsUnavailable(
                f"could not connect to {peer.host}:{peer.port} within {peer.connect_timeout:g} s: "
                "check host, port and firewall"
            )
        raise PacsUnavailable(
            f"could not connect to {peer.host}:{peer.port} (connection refused or unreachable): "
            "is the PACS running and is the port right?"
        )
    # pynetdicom aborts after an ACSE timeout too: tell the two apart by the clock.
    waited = time.monotonic() - conn.opened_at
    if assoc.is_aborted and waited < peer.acse_timeout * 0.9:
        raise PacsAborted(
            f"{peer.describe()} aborted the association request: the PACS may not know the "
            f"calling AE title {peer.calling_ae!r} or supports none of the proposed services"
        )
    raise PacsTimeout(
        f"{peer.describe()} did not answer the association request within {peer.acse_timeout:g} s"
    )


class Session:
    """One association to a PACS; use as a context manager, run many operations.

    >>> with Session(peer, services=("echo", "find")) as s:
    ...     s.echo()
    """

    def __init__(self, peer: Peer, *, services: Sequence[str] = ("echo",)) -> None:
        self.peer = peer
        self.services = tuple(services)
        self.assoc: Association | None = None

    def __enter__(self) -> Session:
        ae = _NoDelayAE(ae_title=self.peer.calling_ae)
        ae.connection_timeout = self.peer.connect_timeout
        ae.acse_timeout = self.peer.acse_timeout
        ae.dimse_timeout = self.peer.dimse_timeout
        ae.network_timeout = self.peer.network_timeout
        ae.maximum_pdu_size = self.peer.max_pdu
        if "echo" in self.services:
            ae.add_requested_context(Verification)
        if "find" in self.services:
            for model in FIND_MODELS.values():
                ae.add_requested_context(model)
        conn = _Connection()

        def _opened(event: evt.Event) -> None:
            conn.opened_at = time.monotonic()

        started = time.monotonic()
        assoc = ae.associate(
            self.peer.host,
            self.peer.port,
            ae_title=self.peer.called_ae,
            evt_handlers=[(evt.EVT_CONN_OPEN, _opened)],
        )
        if not assoc.is_established:
            _raise_for_failed_association(assoc, self.peer, conn, time.monotonic() - started)
        self.assoc = assoc
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.assoc is None:
            return
        if self.assoc.is_established:
            if exc_type is None:
                self.assoc.release()
            else:
                self.assoc.abort()
        self.assoc = None

    def _require(self) -> Association:
        if self.assoc is None or not self.assoc.is_established:
            raise PacsAborted(f"the association with {self.peer.describe()} is no longer open")
        return self.assoc

    def _check_lost(self, operation: str, status: Dataset | None) -> None:
        """A response with no status means the association timed out or was aborted."""
        if status is not None and "Status" in status:
            return
        assoc = self.assoc
        if assoc is not None and assoc.is_aborted:
            raise PacsAborted(f"{self.peer.describe()} aborted the association during {operation}")
        raise PacsTimeout(
            f"{self.peer.describe()} did not answer {operation} within "
            f"{self.peer.dimse_timeout:g} s"
        )

    def echo(self) -> EchoResult:
        assoc = self._require()
        started = time.monotonic()
        status = assoc.send_c_echo()
        self._check_lost("C-ECHO", status)
        code = int(status.Status)
        if code != statuses.SUCCESS:
            raise PacsStatusError("C-ECHO", code)
        return EchoResult(status=code, seconds=time.monotonic() - started)

    def find(self, identifier: Dataset, *, model: str = "S") -> Iterator[Dataset]:
        """Run one C-FIND and yield each match as it arrives."""
        assoc = self._require()
        responses = assoc.send_c_find(identifier, FIND_MODELS[model])
        for status, match in responses:
            self._check_lost("C-FIND", status)
            code = int(status.Status)
            if statuses.is_pending(code):
                if match is not None:
                    yield match
                continue
            if code == statuses.SUCCESS:
                return
            raise PacsStatusError("C-FIND", code, comment=str(status.get("ErrorComment", "") or ""))


def echo(peer: Peer) -> EchoResult:
    """Open an association, send one C-ECHO, release."""
    with Session(peer, services=("echo",)) as session:
        return session.echo()
