"""A lean, blocking DIMSE connection for the bulk data path (receiving C-STOREs).

Why not pynetdicom's Association here: profiled on this machine, a pynetdicom
storage SCP spends its time in polling reactor loops (1 ms sleeps in the DUL
and association threads, one PDU per loop) and in copying its contexts per
association: about 5 ms per received instance, 0.3x DCMTK's storescp. Receiving
is a small part of DICOM: a blocking read loop that streams each data set
straight into its staging file answers as fast as the peer sends.

pynetdicom still does the intricate parts: PDU encoding/decoding of the
association negotiation and presentation context negotiation. Commands are
tiny implicit-VR-little-endian sets, coded in ``commands`` (PS3.7 E, PS3.8 9.3).
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

from pulls.dicom.commands import C_STORE_RQ, NO_DATASET, SHARED_LAYOUTS

log = logging.getLogger(__name__)

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_VERSION = "PACSNPULL_0_1"
# What we advertise as our maximum PDU: large PDUs mean fewer reads per instance.
MAX_PDU_RECEIVE = 1 << 20

# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x04, 0x05, 0x06, 0x07


class PeerGone(Exception):
    """The peer released, aborted or dropped the connection."""


class StoreReceiver(Protocol):
    """What takes the C-STOREs that arrive on a connection (``receiving``): one
    ``begin`` per C-STORE-RQ, its data set's fragments to ``write``, then
    ``finish`` (which answers the peer), or ``discard`` when the association
    ends first."""

    def begin(self, conn: Connection, context_id: int, command: dict[int, object]) -> StoreSink: ...


class StoreSink(Protocol):
    def write(self, data: memoryview) -> None: ...

    def finish(self) -> None: ...

    def discard(self) -> None: ...


# --- the connection --------------------------------------------------------------


@dataclass
class Accepted:
    """The negotiated presentation contexts: id -> (abstract syntax, transfer syntax)."""

    contexts: dict[int, tuple[str, str]] = field(default_factory=dict)
    peer_max_pdu: int = 16384
    calling_ae: str = ""
    called_ae: str = ""


@dataclass(frozen=True)
class AssociationRequest:
    """An encoded A-ASSOCIATE-RQ and its abstract syntaxes by context id.

    Building and encoding ~120 presentation contexts costs tens of ms in
    Python, so callers encode a request once and reuse it.
    """

    encoded: bytes
    syntaxes: tuple[tuple[int, str], ...]


def encode_association_request(
    *,
    calling_ae: str,
    called_ae: str,
    contexts: list[PresentationContext],
    extra_user_information: list | None = None,
) -> AssociationRequest:
    request = A_ASSOCIATE()
    request.application_context_name = APPLICATION_CONTEXT_NAME
    request.calling_ae_title = calling_ae
    request.called_ae_title = called_ae
    for n, cx in enumerate(contexts):
        cx.context_id = 2 * n + 1
    request.presentation_context_definition_list = contexts
    request.user_information = _user_information() + list(extra_user_information or [])
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(request)
    return AssociationRequest(
        encoded=rq.encode(),
        syntaxes=tuple((cx.context_id, str(cx.abstract_syntax)) for cx in contexts),
    )


@dataclass(frozen=True)
class Negotiated:
    reply: bytes
    contexts: tuple[tuple[int, str, str], ...]
    peer_max_pdu: int
    calling_ae: str
    called_ae: str

    def accepted(self) -> Accepted:
        return Accepted(
            contexts={cid: (syntax, ts) for cid, syntax, ts in self.contexts},
            peer_max_pdu=self.peer_max_pdu,
            calling_ae=self.calling_ae,
            called_ae=self.called_ae,
        )


T = TypeVar("T")


class NegotiationCache(Generic[T]):
    """Answers to association requests seen before, by their exact bytes (also
    used for decoded answers to our own requests)."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._items: dict[bytes, T] = {}
        self._lock = threading.Lock()

    def get(self, key: bytes) -> T | None:
        with self._lock:
            return self._items.get(key)

    def put(self, key: bytes, value: T) -> None:
        with self._lock:
            if len(self._items) >= self.size:
                self._items.pop(next(iter(self._items)))
            self._items[key] = value


# A PACS answers the same association request the same way: its decoded answers
# are kept by (request, answer) bytes. Decoding an answer to C-GET's 120 storage
# classes costs ~8 ms of pure Python, on every association otherwise.
_ANSWERS: NegotiationCache[tuple] = NegotiationCache(size=64)


def _accepted_answer(raw: bytes, request: AssociationRequest):
    """The A-ASSOCIATE-AC primitive, the accepted contexts by id, the peer's max PDU."""
    ac = A_ASSOCIATE_AC()
    ac.decode(raw)
    answer = ac.to_primitive()
    proposed = dict(request.syntaxes)
    contexts = {
        cx.context_id: (proposed[cx.context_id], str(cx.transfer_syntax[0]))
        for cx in answer.presentation_context_definition_results_list
        if cx.result == 0x00 and cx.context_id in proposed
    }
    peer_max_pdu = None
    for item in answer.user_information:
        if isinstance(item, MaximumLengthNotification):
            peer_max_pdu = item.maximum_length_received
    return answer, contexts, peer_max_pdu


# As acceptor: for (abstract syntax, the transfer syntaxes proposed, in order)
# the transfer syntax to accept, or the result code that refuses the context.
AcceptPolicy = Callable[[str, list[str]], "str | int"]
# Result codes of a refused context (PS3.8 9.3.3.2).
ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04


def _negotiate(body: bytes, accept: AcceptPolicy) -> Negotiated:
    """Accept an A-ASSOCIATE-RQ: each proposed context as ``accept`` decides, in
    the default roles (the requestor sends, PS3.7 D.3.3.4: no role reply); the AC
    encoded. Refused contexts are logged by their UIDs (no patient data)."""
    rq = A_ASSOCIATE_RQ()
    rq.decode(struct.pack(">BBI", ASSOCIATE_RQ, 0, len(body)) + body)
    request = rq.to_primitive()
    results = []
    for proposed in request.presentation_context_definition_list:
        syntaxes = [str(ts) for ts in proposed.transfer_syntax]
        abstract = str(proposed.abstract_syntax)
        chosen = accept(abstract, syntaxes)
        cx = PresentationContext()
        cx.context_id = proposed.context_id
        cx.abstract_syntax = abstract
        if isinstance(chosen, int):
            cx.result = chosen
            cx.transfer_syntax = syntaxes[:1] or ["1.2.840.10008.1.2"]
            log.info(
                "refused presentation context %s (%s) with transfer syntaxes %s",
                cx.context_id, abstract, ", ".join(syntaxes),
            )  # fmt: skip
        else:
            cx.result = 0x00
            cx.transfer_syntax = [chosen]
        results.append(cx)
    peer_max_pdu = 16384
    for item in request.user_information:
        if isinstance(item, MaximumLengthNotification):
            peer_max_pdu = item.maximum_length_received
    reply = A_ASSOCIATE()
    reply.application_context_name = APPLICATION_CONTEXT_NAME
    reply.calling_ae_title = request.calling_ae_title
    reply.called_ae_title = request.called_ae_title
    reply.result = 0x00
    reply.result_source = 0x01
    reply.presentation_context_definition_results_list = results
    reply.user_information = _user_information()
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(reply)
    return Negotiated(
        reply=ac.encode(),
        contexts=tuple(
            (cx.context_id, str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in results
            if cx.result == 0x00
        ),
        peer_max_pdu=peer_max_pdu,
        calling_ae=str(request.calling_ae_title).strip(),
        called_ae=str(request.called_ae_title).strip(),
    )


# A P-DATA-TF PDU with one PDV item: PDU type, reserved, PDU length, PDV length,
# presentation context id, message control header (PS3.8 9.3.5).
_P_DATA_HEADER = struct.Struct(">BBIIBB")
# A PDV item's length, presentation context id and message control header.
_PDV_HEADER = struct.Struct(">IBB")
# struct timeval, for SO_RCVTIMEO / SO_SNDTIMEO.
_TIMEVAL = struct.Struct("@ll")
# Bytes read from the socket at once; a PDU larger than half of it is read
# straight into a buffer of its own.
_READ_BUFFER = 1 << 18


class Connection:
    """One TCP connection carrying one association, read and written blocking.

    The socket stays in blocking mode and the kernel applies the timeout
    (SO_RCVTIMEO / SO_SNDTIMEO): one system call per read instead of Python's
    poll + recv, and the reads are buffered here instead of through
    ``socket.makefile`` (two Python layers per read). A read or write that
    times out raises TimeoutError; a peer that closes raises PeerGone.
    """

    def __init__(self, sock: socket.socket, *, timeout: float) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        self.sock = sock
        self.accepted = Accepted()
        self.commands = SHARED_LAYOUTS
        self._timeout: float | None = None
        self.set_timeout(timeout)
        self._buffer = bytearray(_READ_BUFFER)
        self._view = memoryview(self._buffer)
        self._start = self._end = 0
        self.reads = 0  # system calls that read (each may have waited for the peer)

    def set_timeout(self, seconds: float) -> None:
        """The longest a single read or write may wait (changed only when it differs)."""
        if seconds == self._timeout:
            return
        self._timeout = seconds
        whole = int(seconds)
        value = _TIMEVAL.pack(whole, max(int((seconds - whole) * 1e6), 0 if whole else 1000))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)

    def close(self) -> None:
        self.sock.close()

    @property
    def buffered(self) -> int:
        """Bytes read from the socket and not yet taken."""
        return self._end - self._start

    def _recv_into(self, view: memoryview) -> int:
        self.reads += 1
        try:
            got = self.sock.recv_into(view)
        except BlockingIOError:  # SO_RCVTIMEO expired
            raise TimeoutError(f"no data within {self._timeout:g} s") from None
        if not got:
            raise PeerGone("the peer closed the connection")
        return got

    def read_exact(self, n: int) -> bytes | bytearray:
        start, end = self._start, self._end
        if end - start >= n:
            self._start = start + n
            return bytes(self._view[start : start + n])
        if n > _READ_BUFFER // 2:
            # A large PDU: what is buffered, then the rest straight into its own buffer.
            out = bytearray(n)
            have = end - start
            out[:have] = self._view[start:end]
            self._start = self._end = 0
            into = memoryview(out)
            while have < n:
                have += self._recv_into(into[have:])
            return out
        if start + n > _READ_BUFFER:  # no room behind: move what is left to the front
            self._buffer[: end - start] = self._view[start:end]
            start, end = 0, end - start
        while end - start < n:
            end += self._recv_into(self._view[end:])
        self._start, self._end = start + n, end
        return bytes(self._view[start : start + n])

    def read_pdu(self) -> tuple[int, bytes | bytearray]:
        """(type, body) of the next PDU."""
        header = self.read_exact(6)
        pdu_type = header[0]
        (length,) = struct.unpack_from(">I", header, 2)
        return pdu_type, self.read_exact(length) if length else b""

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except BlockingIOError:  # SO_SNDTIMEO expired
            raise TimeoutError(f"could not send within {self._timeout:g} s") from None

    def send_pdu(self, pdu_type: int, body: bytes) -> None:
        self.send(struct.pack(">BBI", pdu_type, 0, len(body)) + body)

    def send_message(self, context_id: int, command: bytes, dataset: bytes | None = None) -> None:
        """A command (and data set) as PDVs within the peer's maximum PDU size."""
        limit = max(self.accepted.peer_max_pdu, 1024) if self.accepted.peer_max_pdu else 1 << 20
        chunk = limit - 6  # PDV item header: length (4), context id (1), control (1)
        if dataset is None and len(command) <= chunk:  # a response: one PDU
            self.send(
                _P_DATA_HEADER.pack(
                    P_DATA_TF, 0, len(command) + 6, len(command) + 2, context_id, 0x03
                )
                + command
            )
            return
        pdus = []
        for payload, flag in ((command, 0x01), (dataset, 0x00)):
            if payload is None:
                continue
            for start in range(0, max(len(payload), 1), chunk):
                part = payload[start : start + chunk]
                last = start + chunk >= len(payload)
                control = flag | (0x02 if last else 0x00)
                pdus.append(
                    _P_DATA_HEADER.pack(
                        P_DATA_TF, 0, len(part) + 6, len(part) + 2, context_id, control
                    )
                    + part
                )
        self.send(b"".join(pdus))

    def abort(self) -> None:
        try:
            pdu = A_ABORT_RQ()
            pdu.source = 0x00
            pdu.reason_diagnostic = 0x00
            self.send(pdu.encode())
        except OSError:
            pass

    # --- association, acceptor side -----------------------------------------------

    def accept_association(
        self,
        *,
        ae_title: str,
        accept: AcceptPolicy,
        busy: bool = False,
        cache: NegotiationCache | None = None,
    ) -> bool:
        """Read the A-ASSOCIATE-RQ and accept or reject it. Returns True if accepted.

        Decoding and negotiating a PACS's request costs ~7 ms in pure Python
        (Orthanc proposes ~100 contexts for every C-MOVE's sub-association), more
        than receiving its instances. The answer depends only on the request's
        bytes and our fixed ``accept`` policy, so ``cache`` keeps it per request.
        """
        pdu_type, body = self.read_pdu()
        if pdu_type != ASSOCIATE_RQ:
            self.abort()
            return False
        # PS3.8 9.3.2: called AE title at bytes 4-20, calling AE title at 20-36.
        called = body[4:20].decode("ascii", "replace").strip()
        if busy or called != ae_title.strip():
            rq = A_ASSOCIATE_RQ()
            rq.decode(struct.pack(">BBI", pdu_type, 0, len(body)) + body)
            request = rq.to_primitive()
            if busy:
                self._reject(request, result=0x02, source=0x03, diagnostic=0x02)  # local limit
            else:
                self._reject(request, result=0x01, source=0x01, diagnostic=0x07)  # called AE
            return False
        body = bytes(body)
        negotiated = cache.get(body) if cache is not None else None
        if negotiated is None:
            negotiated = _negotiate(body, accept)
            if cache is not None:
                cache.put(body, negotiated)
        reply, self.accepted = negotiated.reply, negotiated.accepted()
        self.send(reply)
        return True

    def _reject(self, request: A_ASSOCIATE, *, result: int, source: int, diagnostic: int) -> None:
        reply = A_ASSOCIATE()
        reply.result = result
        reply.result_source = source
        reply.diagnostic = diagnostic
        rj = A_ASSOCIATE_RJ()
        rj.from_primitive(reply)
        self.send(rj.encode())

    # --- messages -----------------------------------------------------------------

    def messages(
        self, store: StoreReceiver | None
    ) -> Iterator[tuple[int, dict[int, object], bytes | None]]:
        """Yield (context id, command, data set bytes or None) for every complete
        message except C-STOREs, which ``store`` writes and answers on its own.
        Ends when the association is released; raises PeerGone on abort."""
        command = bytearray()  # a command in several fragments (rare)
        writer = None  # the C-STORE being received (receiving._PendingStore)
        pending: tuple[int, dict[int, object]] | None = None  # a command awaiting its data set
        dataset = bytearray()
        pdv_at, decode = _PDV_HEADER.unpack_from, self.commands.decode
        while True:
            pdu_type, body = self.read_pdu()
            if pdu_type != P_DATA_TF:
                if pdu_type in (RELEASE_RQ, RELEASE_RP):
                    if writer is not None:
                        writer.discard()
                    if pdu_type == RELEASE_RQ:
                        self.send_pdu(RELEASE_RP, b"\x00\x00\x00\x00")
                    return
                if writer is not None:
                    writer.discard()
                if pdu_type == ABORT:
                    raise PeerGone("the peer aborted the association")
                self.abort()
                raise PeerGone(f"unexpected PDU type 0x{pdu_type:02X}")
            offset, size = 0, len(body)
            view = memoryview(body)
            while offset < size:
                length, context_id, control = pdv_at(body, offset)
                data = view[offset + 6 : offset + 4 + length]
                offset += 4 + length
                if control & 0x01:  # command fragment
                    if not control & 0x02:
                        command += data
                        continue
                    if command:
                        command += data
                        fields = decode(bytes(command))
                        command.clear()
                    else:
                        fields = decode(bytes(data))
                    has_dataset = fields.get(0x0800) != NO_DATASET
                    if fields.get(0x0100) == C_STORE_RQ:
                        if store is None:  # we asked for no instances on this association
                            self.abort()
                            raise PeerGone("the peer sent a C-STORE we did not ask for")
                        writer = store.begin(self, context_id, fields)
                        if not has_dataset:
                            writer.finish()
                            writer = None
                    elif has_dataset:
                        pending = (context_id, fields)
                    else:
                        yield context_id, fields, None
                elif writer is not None:
                    writer.write(data)
                    if control & 0x02:
                        writer.finish()
                        writer = None
                elif pending is not None:
                    dataset += data
                    if control & 0x02:
                        yield pending[0], pending[1], bytes(dataset)
                        pending = None
                        dataset.clear()

    def release(self) -> None:
        """A-RELEASE-RQ; the reply is read by ``messages``."""
        self.send_pdu(RELEASE_RQ, b"\x00\x00\x00\x00")

    # --- association, requestor side ----------------------------------------------

    def request_association(
        self, *, calling_ae: str, called_ae: str, request: AssociationRequest
    ) -> A_ASSOCIATE:
        """Send the A-ASSOCIATE-RQ; return the peer's answer (AC or RJ primitive).

        Raises PeerGone if the peer aborts or closes instead of answering."""
        self.send(request.encoded)
        pdu_type, body = self.read_pdu()
        raw = struct.pack(">BBI", pdu_type, 0, len(body)) + body
        if pdu_type == ASSOCIATE_AC:
            key = request.encoded + raw
            known = _ANSWERS.get(key)
            if known is None:
                known = _accepted_answer(raw, request)
                _ANSWERS.put(key, known)
            answer, contexts, peer_max_pdu = known
            self.accepted.contexts.update(contexts)
            if peer_max_pdu is not None:
                self.accepted.peer_max_pdu = peer_max_pdu
            self.accepted.calling_ae = calling_ae
            self.accepted.called_ae = called_ae
            return answer
        if pdu_type == ASSOCIATE_RJ:
            rj = A_ASSOCIATE_RJ()
            rj.decode(raw)
            return rj.to_primitive()
        raise PeerGone(f"the peer answered the association request with PDU 0x{pdu_type:02X}")

    def context_for(self, abstract_syntax: str) -> tuple[int, str] | None:
        for context_id, (syntax, transfer_syntax) in self.accepted.contexts.items():
            if syntax == abstract_syntax:
                return context_id, transfer_syntax
        return None


def _user_information() -> list:
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = MAX_PDU_RECEIVE
    class_uid = ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION
    return [max_length, class_uid, version]
