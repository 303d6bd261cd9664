"""The storage SCP: receives C-STOREs (from C-MOVE) into a staging area.

It stays simple on purpose: each instance is written as it came (file meta
plus the data set's bytes, no decode and re-encode), atomically (temp file +
rename) under ``staging/<StudyInstanceUID>/<SOPInstanceUID>.dcm``, names
sanitised. It never decides which project a file belongs to; the worker that
asked for it does. It answers 0xA700 when the disk is full and an error
status, never a crash, on anything else; C-ECHO works so a PACS can test us.

The receive path is ``wire.Connection``: one blocking thread per association
(see that module for why not pynetdicom's reactor).
"""

from __future__ import annotations

import logging
import re
import selectors
import socket
import threading
from pathlib import Path

from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from pulls.dicom.commands import (
    C_ECHO_RQ,
    C_ECHO_RSP,
    NO_DATASET,
    STATUS_SUCCESS,
    encode_command,
)
from pulls.dicom.receiving import InstanceWriter, StoreCounters
from pulls.dicom.transfer_syntaxes import accept_from
from pulls.dicom.wire import (
    ABSTRACT_SYNTAX_NOT_SUPPORTED,
    TRANSFER_SYNTAXES_NOT_SUPPORTED,
    Connection,
    NegotiationCache,
    PeerGone,
)

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def _is_storage_class(uid: str) -> bool:
    """A storage SOP class: one pynetdicom knows as such, or one it does not
    know at all (private, retired, newer than pynetdicom), never another
    service (query/retrieve, worklist, print...) that a C-STORE cannot serve."""
    if len(uid) > 64 or not _UID.fullmatch(uid):
        return False
    service = uid_to_service_class(uid)
    return service is StorageServiceClass or service is ServiceClass


def accept_storage(abstract_syntax: str, proposed: list[str]) -> str | int:
    """The storage SCP's answer to a proposed presentation context: every storage
    class, in the first transfer syntax the PACS proposes that we know (what it
    holds: nothing is converted on our account); Verification for C-ECHO."""
    if abstract_syntax != VERIFICATION and not _is_storage_class(abstract_syntax):
        return ABSTRACT_SYNTAX_NOT_SUPPORTED
    chosen = accept_from(proposed)
    return TRANSFER_SYNTAXES_NOT_SUPPORTED if chosen is None else chosen


def listening_socket(bind: str, port: int) -> socket.socket:
    """The SCP's listening socket, non-blocking: several processes may wait on it
    (``serve_processes``) and only one gets each connection."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((bind, port))
    sock.listen(64)
    sock.setblocking(False)
    return sock


# A process that serves an association leaves the next one to an idle sibling
# for this long (when it has siblings): two associations in one process share
# its GIL, measured here at 16 % more CPU per instance than in two processes.
_BUSY_DEFERS = 0.05


class StorageSCP:
    def __init__(
        self,
        *,
        ae_title: str,
        port: int,
        staging_dir: Path,
        bind: str = "127.0.0.1",
        max_associations: int = 32,
        network_timeout: float = 120,
        listener: socket.socket | None = None,
        has_siblings: bool = False,
    ) -> None:
        """``listener``: a listening socket shared with sibling processes (see
        ``serve_processes``); else the SCP binds ``bind``:``port`` itself."""
        self.ae_title = ae_title
        self.port = port
        self.bind = bind
        self.staging_dir = staging_dir
        self.max_associations = max_associations
        self.network_timeout = network_timeout
        self.writer = InstanceWriter(staging_dir)
        self.negotiations = NegotiationCache()
        self._active = 0
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._listener = listener
        self._has_siblings = has_siblings
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def counters(self) -> StoreCounters:
        return self.writer.counters

    def _serve(self, sock: socket.socket) -> None:
        try:
            self._serve_association(sock)
        finally:
            with self._lock:
                self._active -= 1
                self._idle.notify_all()

    def _serve_association(self, sock: socket.socket) -> None:
        conn = Connection(sock, timeout=self.network_timeout)
        busy = self._active > self.max_associations
        try:
            if not conn.accept_association(
                ae_title=self.ae_title,
                accept=accept_storage,
                busy=busy,
                cache=self.negotiations,
            ):
                return
            for context_id, command, _ in conn.messages(self.writer):
                if command.get(0x0100) == C_ECHO_RQ:
                    conn.send_message(
                        context_id,
                        encode_command(
                            {
                                0x0002: VERIFICATION,
                                0x0100: C_ECHO_RSP,
                                0x0120: int(command.get(0x0110, 0)),
                                0x0800: NO_DATASET,
                                0x0900: STATUS_SUCCESS,
                            }
                        ),
                    )
                else:
                    log.warning("unexpected command 0x%04X: aborting", command.get(0x0100, 0))
                    conn.abort()
                    return
        except (PeerGone, OSError) as exc:
            log.info("association ended: %s", type(exc).__name__)
        except Exception:  # noqa: BLE001  (one bad association must not stop the SCP)
            log.exception("storage SCP association failed")
            conn.abort()
        finally:
            self.writer.association_ended()
            conn.close()

    def _accept_loop(self) -> None:
        listener = self._listener
        waiting = selectors.DefaultSelector()
        waiting.register(listener, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                if not waiting.select(timeout=0.2):
                    continue
                if self._has_siblings:
                    with self._idle:
                        if self._active:  # an idle sibling, woken too, takes it meanwhile
                            self._idle.wait(_BUSY_DEFERS)
                try:
                    sock, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    continue  # a sibling process took it
                except OSError:
                    if self._stopping.is_set():
                        return
                    raise
                sock.setblocking(True)
                with self._lock:
                    self._active += 1
                threading.Thread(target=self._serve, args=(sock,), daemon=True).start()
        finally:
            waiting.close()

    def start(self) -> StorageSCP:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        if self._listener is None:
            self._listener = listening_socket(self.bind, self.port)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join()
            self._thread = None
            if not self._has_siblings and self._listener is not None:
                self._listener.close()
                self._listener = None

    def __enter__(self) -> StorageSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
