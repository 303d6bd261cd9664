"""DIMSE commands: group 0000 in implicit VR little endian (PS3.7 E), coded here.

Commands are small and frequent (one or two per instance received), so the
decoder keeps to few steps per element and remembers the layout of commands
it has seen (``CommandLayouts``); the C-STORE response is built directly.
"""

from __future__ import annotations

import functools
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

# Command fields (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_PROCESSING_FAILURE = 0x0110

_UI_TAGS = {0x0002, 0x0003, 0x1000, 0x1001}  # (0000,xxxx) elements that hold UIDs
_US_TAGS = {0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900, 0x1020, 0x1021, 0x1022, 0x1023}
_TEXT_TAGS = {0x0600, 0x0902, 0x1030}  # Move Destination, Error Comment, Originator AE


_COMMAND_ELEMENT = struct.Struct("<HHI")
_US_VALUE = struct.Struct("<H")
_UL_VALUE = struct.Struct("<I")
# How a command element's value is read: US, text (UI and the text elements), UL.
_AS_US, _AS_TEXT, _AS_UL = 1, 2, 3
_READ_AS = {
    **dict.fromkeys(_US_TAGS, _AS_US),
    **dict.fromkeys(_UI_TAGS | _TEXT_TAGS, _AS_TEXT),
    0x0000: _AS_UL,
}


def decode_command(data: bytes) -> dict[int, object]:
    """Group 0000 in implicit VR little endian -> {element number: value}.
    (Two commands per instance received by C-GET: kept to few steps per element.)"""
    out: dict[int, object] = {}
    offset, size = 0, len(data)
    element_at, us_at, read_as = _COMMAND_ELEMENT.unpack_from, _US_VALUE.unpack_from, _READ_AS.get
    while offset + 8 <= size:
        group, element, length = element_at(data, offset)
        start = offset + 8
        offset = start + length
        if group:
            continue
        kind = read_as(element)
        if kind == _AS_US and length == 2:
            out[element] = us_at(data, start)[0]
        elif kind == _AS_TEXT:
            out[element] = data[start:offset].rstrip(b"\x00 ").decode("ascii", "replace")
        elif kind == _AS_UL and length == 4:
            out[element] = _UL_VALUE.unpack_from(data, start)[0]
        else:
            out[element] = data[start:offset]
    return out


class CommandLayouts:
    """Decodes commands like ``decode_command``, in one unpack for a command laid
    out like one seen before: the same elements with the same lengths. A
    retrieval brings one such command per instance (a C-STORE-RQ, a pending
    C-GET/C-MOVE-RSP); walking their ten-odd elements one by one was a sixth of
    a C-GET's instructions per instance (CPython 3.11).

    One set serves every connection of a process (``SHARED_LAYOUTS``): a PACS
    opens an association to our storage SCP for every C-MOVE, and its C-STORE
    commands are laid out as on the last one. Learnt per connection, the
    layouts were made again (a regular expression and a struct each) for the
    first commands of every association. Threads may decode at once; a new
    layout is added under a lock.

    A layout is used only when every element header in the command (group,
    element, length) equals its own, byte for byte, so the result is always
    decode_command's."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self._layouts: dict[int, list[_Layout]] = {}
        self._count = 0
        self._lock = threading.Lock()

    def decode(self, data: bytes) -> dict[int, object]:
        for layout in self._layouts.get(len(data), ()):
            fields = layout.decode(data)
            if fields is not None:
                return fields
        fields = decode_command(data)
        if self._count < self.size:
            layout = _Layout.of(data)
            if layout is not None:
                self._learn(data, layout)
        return fields

    def _learn(self, data: bytes, layout: _Layout) -> None:
        size = len(data)
        with self._lock:
            known = self._layouts.get(size, [])
            taken = any(other.match(data) is not None for other in known)  # by another thread
            if len(known) < 4 and self._count < self.size and not taken:
                # A new list, not appended to: a thread may be going through the old one.
                self._layouts[size] = [*known, layout]
                self._count += 1


@dataclass(frozen=True)
class _Layout:
    """A command's layout: its element headers as they must appear (one regular
    expression, checked in C) and one unpack of the values between them."""

    match: Callable[[bytes], object]
    unpack: Callable[[bytes], tuple]
    elements: tuple[int, ...]
    text: tuple[int, ...]  # elements read as text

    @staticmethod
    def of(data: bytes) -> _Layout | None:
        pattern, formats, elements, text = [b"(?s)"], ["<"], [], []
        offset = 0
        while offset + 8 <= len(data):
            group, element, length = _COMMAND_ELEMENT.unpack_from(data, offset)
            if group != 0:
                return None  # not a command: leave it to decode_command
            pattern.append(re.escape(data[offset : offset + 8]) + b".{%d}" % length)
            offset += 8 + length
            kind = _READ_AS.get(element)
            if kind == _AS_US and length == 2:
                formats.append("8xH")
            elif kind == _AS_UL and length == 4:
                formats.append("8xI")
            else:
                formats.append(f"8x{length}s")
                if kind == _AS_TEXT:
                    text.append(element)
            elements.append(element)
        if offset != len(data) or len(set(elements)) != len(elements):
            return None  # trailing bytes or a repeated element: decode_command's way
        return _Layout(
            re.compile(b"".join(pattern)).fullmatch,
            struct.Struct("".join(formats)).unpack,
            tuple(elements),
            tuple(text),
        )

    def decode(self, data: bytes) -> dict[int, object] | None:
        if self.match(data) is None:  # another layout
            return None
        fields = dict(zip(self.elements, self.unpack(data)))  # noqa: B905  (same length)
        for element in self.text:
            fields[element] = fields[element].rstrip(b"\x00 ").decode("ascii", "replace")
        return fields


# The layouts every connection of this process decodes commands with.
SHARED_LAYOUTS = CommandLayouts()


def encode_command(elements: dict[int, object]) -> bytes:
    """{element: value} (int for US, str for UI/text) -> group 0000 with its length."""
    body = bytearray()
    for element in sorted(elements):
        value = elements[element]
        if isinstance(value, int):
            raw = struct.pack("<H", value)
        else:
            raw = str(value).encode("ascii")
            if len(raw) % 2:
                raw += b"\x00" if element in _UI_TAGS else b" "
        body += struct.pack("<HHI", 0x0000, element, len(raw)) + raw
    return struct.pack("<HHII", 0x0000, 0x0000, 4, len(body)) + bytes(body)


_ELEMENT_HEADER = struct.Struct("<HHI")
_GROUP_LENGTH = struct.Struct("<HHII")
# (0000,0100) Command Field .. (0000,0900) Status of a C-STORE-RSP, one US each.
_STORE_RSP_US = struct.Struct("<" + "HHIH" * 4)


@functools.lru_cache(maxsize=256)
def _ui_element(element: int, uid: str) -> bytes:
    raw = uid.encode("ascii", "replace")
    if len(raw) % 2:
        raw += b"\x00"
    return _ELEMENT_HEADER.pack(0x0000, element, len(raw)) + raw


def encode_store_response(
    *, sop_class: str, message_id: int, status: int, sop_instance: str
) -> bytes:
    """The C-STORE-RSP command (PS3.7 9.3.1.2): what ``encode_command`` makes of
    it, built directly, as it is sent for every instance received."""
    numbers = _STORE_RSP_US.pack(
        0x0000, 0x0100, 2, C_STORE_RSP,
        0x0000, 0x0120, 2, message_id,
        0x0000, 0x0800, 2, NO_DATASET,
        0x0000, 0x0900, 2, status,
    )  # fmt: skip
    instance = sop_instance.encode("ascii", "replace")
    if len(instance) % 2:
        instance += b"\x00"
    body = (
        _ui_element(0x0002, sop_class)
        + numbers
        + _ELEMENT_HEADER.pack(0x0000, 0x1000, len(instance))
        + instance
    )
    return _GROUP_LENGTH.pack(0x0000, 0x0000, 4, len(body)) + body
