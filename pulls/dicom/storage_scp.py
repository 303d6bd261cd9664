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
import socket
import socketserver
import threading
from pathlib import Path

from pynetdicom import StoragePresentationContexts
from pynetdicom.presentation import PresentationContext

from pulls.dicom.receiving import InstanceWriter, StoreCounters
from pulls.dicom.transfer_syntaxes import PREFERRED_TRANSFER_SYNTAXES
from pulls.dicom.wire import (
    C_ECHO_RQ,
    C_ECHO_RSP,
    NO_DATASET,
    STATUS_SUCCESS,
    Connection,
    NegotiationCache,
    PeerGone,
    encode_command,
)

log = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"


def storage_contexts() -> list[PresentationContext]:
    """Every storage SOP class pynetdicom knows, plus Verification."""
    contexts = []
    for uid in [cx.abstract_syntax for cx in StoragePresentationContexts] + [VERIFICATION]:
        cx = PresentationContext()
        cx.abstract_syntax = uid
        cx.transfer_syntax = list(PREFERRED_TRANSFER_SYNTAXES)
        contexts.append(cx)
    return contexts


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


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
    ) -> None:
        self.ae_title = ae_title
        self.port = port
        self.bind = bind
        self.staging_dir = staging_dir
        self.max_associations = max_associations
        self.network_timeout = network_timeout
        self.writer = InstanceWriter(staging_dir)
        self.contexts = storage_contexts()
        self.negotiations = NegotiationCache()
        self._active = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def counters(self) -> StoreCounters:
        return self.writer.counters

    def _serve(self, sock: socket.socket) -> None:
        conn = Connection(sock, timeout=self.network_timeout)
        with self._lock:
            busy = self._active >= self.max_associations
            self._active += 1
        try:
            if not conn.accept_association(
                ae_title=self.ae_title,
                contexts=self.contexts,
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
            with self._lock:
                self._active -= 1
            conn.close()

    def start(self) -> StorageSCP:
        scp = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                scp._serve(self.request)

        self.staging_dir.mkdir(parents=True, exist_ok=True)
        self._server = _Server((self.bind, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> StorageSCP:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """Run the SCP alone (benchmarks, debugging): python -m pulls.dicom.storage_scp."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="pacsnpull storage SCP")
    parser.add_argument("--aet", default="PACSNPULL")
    parser.add_argument("--port", type=int, default=11113)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--staging", type=Path, required=True)
    args = parser.parse_args(argv)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with StorageSCP(ae_title=args.aet, port=args.port, staging_dir=args.staging, bind=args.bind):
        stop.wait()


if __name__ == "__main__":
    main()
