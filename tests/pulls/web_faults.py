"""A DICOMweb server that misbehaves on purpose: an HTTP proxy in front of
Orthanc's DICOMweb plugin that answers what a test tells it to (401, 404,
429 with Retry-After, 503) or cuts a WADO-RS response in the middle, and
checks the credentials a node sends. Listens on 127.0.0.1, on a free port."""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


@dataclass
class Fault:
    """What the next matching request gets (``times`` of them; then the real answer)."""

    status: int = 0  # answer this instead of forwarding
    retry_after: str | None = None
    cut_after: int = 0  # forward a WADO-RS response, but only this many bytes of it
    drop_last_part: bool = False  # forward it whole, but without its last part
    times: int = 1
    path_contains: str = ""
    method: str = "GET"


@dataclass
class FaultyServer:
    upstream: str  # Orthanc's http://127.0.0.1:port
    faults: list[Fault] = field(default_factory=list)
    authorization: str | None = None  # demanded of every request when set
    # (method, path, Authorization, monotonic time of arrival)
    seen: list[tuple[str, str, str, float]] = field(default_factory=list)

    def start(self) -> FaultyServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                owner._serve(self, "GET")

            def do_POST(self) -> None:
                owner._serve(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def _fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and fault.method == method and fault.path_contains in path:
                fault.times -= 1
                return fault
        return None

    def _serve(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        auth = handler.headers.get("Authorization", "")
        self.seen.append((method, handler.path, auth, time.monotonic()))
        body = b""
        if method == "POST":
            body = handler.rfile.read(int(handler.headers.get("Content-Length", "0") or 0))
        if self.authorization is not None and auth != self.authorization:
            self._answer(handler, 401, extra={"WWW-Authenticate": 'Basic realm="pacs"'})
            return
        fault = self._fault(method, handler.path)
        if fault is not None and fault.status:
            extra = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
            self._answer(handler, fault.status, extra=extra)
            return
        upstream = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        headers = {
            k: v for k, v in handler.headers.items() if k.lower() not in ("host", "authorization")
        }
        conn.request(method, handler.path, body=body or None, headers=headers)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        if fault is not None and fault.drop_last_part:
            boundary = response.getheader("Content-Type").split("boundary=")[1].strip('"')
            marker = f"\r\n--{boundary}".encode()
            closing = data.rindex(marker)
            data = data[: data.rindex(marker, 0, closing)] + data[closing:]
        handler.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if fault is not None and fault.cut_after:
            handler.wfile.write(data[: fault.cut_after])
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.shutdown(2)  # the connection cut in the middle
            return
        handler.wfile.write(data)

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, *, extra: dict) -> None:
        body = b'{"error": "as the test asked"}'
        handler.send_response(status)
        for key, value in extra.items():
            handler.send_header(key, value)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
