"""The storage SCP: receives C-STOREs (from C-MOVE) into a staging area.

It stays simple on purpose: each instance is written as it came (file meta
plus the dataset's raw bytes, no decode and re-encode), atomically (temp file
+ rename) under ``staging/<StudyInstanceUID>/<SOPInstanceUID>.dcm``. It never
decides which project a file belongs to; the worker that asked for it does.
"""

from __future__ import annotations

import errno
import logging
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer

from pulls.dicom.staging import stage_instance
from pulls.dicom.transfer_syntaxes import PREFERRED_TRANSFER_SYNTAXES

log = logging.getLogger(__name__)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_PROCESSING_FAILURE = 0x0110


class _NoDelayServer(ThreadedAssociationServer):
    def get_request(self):  # type: ignore[override]
        client, address = super().get_request()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client, address

    def shutdown(self) -> None:
        # pynetdicom's shutdown() also unregisters from the AE's list of servers,
        # which only start_server() fills; make_server() (ours) does not.
        socketserver.BaseServer.shutdown(self)
        self.server_close()


@dataclass
class StoreCounters:
    received: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class StorageSCP:
    def __init__(
        self, *, ae_title: str, port: int, staging_dir: Path, bind: str = "127.0.0.1"
    ) -> None:
        self.ae_title = ae_title
        self.port = port
        self.bind = bind
        self.staging_dir = staging_dir
        self.counters = StoreCounters()
        self._server: ThreadedAssociationServer | None = None

    def _handle_store(self, event: evt.Event) -> int:
        # Handlers never raise: an exception would abort the association.
        try:
            stage_instance(
                self.staging_dir,
                study_uid=str(event.dataset.get("StudyInstanceUID", "") or ""),
                sop_uid=str(event.request.AffectedSOPInstanceUID),
                data=[event.encoded_dataset()],
            )
        except OSError as exc:
            with self.counters.lock:
                self.counters.failed += 1
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                log.error("staging disk full: answering 0xA700 (out of resources)")
                return STATUS_OUT_OF_RESOURCES
            log.error("could not write a received instance: %s", exc.strerror)
            return STATUS_PROCESSING_FAILURE
        except Exception as exc:  # noqa: BLE001  (a bad dataset must not kill the SCP)
            with self.counters.lock:
                self.counters.failed += 1
            log.error("could not store a received instance: %s", type(exc).__name__)
            return STATUS_PROCESSING_FAILURE
        with self.counters.lock:
            self.counters.received += 1
        return STATUS_SUCCESS

    def start(self) -> StorageSCP:
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        for context in StoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, PREFERRED_TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification: let PACS echo us
        ae.maximum_associations = 32
        ae.network_timeout = 120
        ae.dimse_timeout = 120
        self._server = ae.make_server(
            (self.bind, self.port),
            evt_handlers=[(evt.EVT_C_STORE, self._handle_store)],
            server_class=_NoDelayServer,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def __enter__(self) -> StorageSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
