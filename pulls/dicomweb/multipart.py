"""Reading a ``multipart/related`` response (PS3.18 8.7.3.2) as it streams.

Each part's body goes to a sink as it arrives, so an instance of any size
passes through in chunks; a part is only complete once its closing delimiter
has been read, and a response that ends before the final delimiter is cut.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class CutResponse(Exception):
    """The response ended before its final delimiter (the connection was cut)."""

    def __init__(self, parts: int) -> None:
        super().__init__(f"the response ended after {parts} complete parts, before its end")
        self.parts = parts


class PartSink(Protocol):
    def start(self, headers: dict[str, str]) -> None: ...

    def write(self, data: bytes) -> None: ...

    def end(self) -> None:
        """The part is whole."""

    def abandon(self) -> None:
        """The part was cut short: drop what was written of it."""


def boundary_of(content_type: str) -> bytes | None:
    """The boundary parameter of a multipart Content-Type, or None."""
    media, *params = (p.strip() for p in content_type.split(";"))
    if media.lower() != "multipart/related":
        return None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "boundary" and value.strip():
            return value.strip().strip('"').encode("ascii", "replace")
    return None


def _headers(block: bytes) -> dict[str, str]:
    headers = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return headers


_PREAMBLE, _HEADERS, _BODY, _DONE = range(4)


def read_parts(chunks: Iterable[bytes], boundary: bytes, sink: PartSink) -> int:
    """Feed each part of the body to ``sink``; the number of complete parts.
    Raises CutResponse when the body ends before its final delimiter."""
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) + 2  # a delimiter, and the two bytes after it, may straddle chunks
    buffer = bytearray(b"\r\n")  # the first boundary is a delimiter without its CRLF
    state, parts = _PREAMBLE, 0
    for chunk in chunks:
        buffer += chunk
        while True:
            if state == _PREAMBLE:
                at = buffer.find(delimiter)
                if at < 0 or len(buffer) < at + len(delimiter) + 2:
                    break
                after = buffer[at + len(delimiter) : at + len(delimiter) + 2]
                del buffer[: at + len(delimiter) + 2]
                state = _DONE if after == b"--" else _HEADERS
            elif state == _HEADERS:
                at = buffer.find(b"\r\n\r\n")
                if at < 0:
                    if len(buffer) > 65536:
                        raise ValueError("a part's headers are longer than 64 KiB")
                    break
                sink.start(_headers(bytes(buffer[:at])))
                del buffer[: at + 4]
                state = _BODY
            elif state == _BODY:
                at = buffer.find(delimiter)
                if at < 0:
                    if len(buffer) > keep:
                        sink.write(bytes(buffer[: len(buffer) - keep]))
                        del buffer[: len(buffer) - keep]
                    break
                if len(buffer) < at + len(delimiter) + 2:
                    break  # the delimiter's two next bytes are still to come
                sink.write(bytes(buffer[:at]))
                sink.end()
                parts += 1
                after = buffer[at + len(delimiter) : at + len(delimiter) + 2]
                del buffer[: at + len(delimiter) + 2]
                state = _DONE if after == b"--" else _HEADERS
            else:
                return parts
    if state == _BODY:
        sink.abandon()
    if state != _DONE:
        raise CutResponse(parts)
    return parts
