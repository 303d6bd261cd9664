"""What is at the head of a stored instance: the file meta we write before a
data set received, and the keys placement needs, read from its first bytes.

The C-STORE paths (``receiving``), placement, counting and de-identification
read and write heads with these, never decoding a whole data set with pydicom
where a walk of its first elements says enough.
"""

from __future__ import annotations

import functools
import struct
import zlib

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID

from pulls.dicom.wire import IMPLEMENTATION_VERSION

# The first bytes of a data set: enough to find StudyInstanceUID in practice.
HEAD_SIZE = 64 << 10
_IMPLICIT_LE = "1.2.840.10008.1.2"
# The data set itself is deflated: Deflated Explicit VR Little Endian, and the
# two JPIP Referenced Deflate syntaxes (PS3.5 A.5, A.7).
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205")
# Every other syntax we know but big endian encodes the data set in explicit VR
# little endian, compressed ones included (only the pixel data is encapsulated,
# PS3.5 A.4): the keys are read the same way.
_NOT_EXPLICIT_LE = frozenset({_IMPLICIT_LE, "1.2.840.10008.1.2.2", *_DEFLATED})


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr == b"UI" else b" "
    if vr == b"OB":
        return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


@functools.lru_cache(maxsize=256)
def _meta_around(sop_class: str, transfer_syntax: str, source_ae: str) -> tuple[bytes, bytes]:
    """The group 0002 elements before and after the SOP Instance UID: the same
    for every instance of an association's presentation context."""
    before = _meta_element(0x0001, b"OB", b"\x00\x01") + _meta_element(
        0x0002, b"UI", sop_class.encode("ascii", "replace")
    )
    after = (
        _meta_element(0x0010, b"UI", transfer_syntax.encode("ascii"))
        + _meta_element(0x0012, b"UI", str(PYNETDICOM_IMPLEMENTATION_UID).encode())
        + _meta_element(0x0013, b"SH", IMPLEMENTATION_VERSION.encode())
    )
    if source_ae:
        after += _meta_element(0x0016, b"AE", source_ae.encode("ascii", "replace"))
    return before, after


_PREAMBLE = b"\x00" * 128 + b"DICM"


def file_header(
    *, sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str
) -> bytes:
    """Preamble, DICM and group 0002 (explicit VR little endian, PS3.10 7.1)."""
    before, after = _meta_around(sop_class, transfer_syntax, source_ae)
    body = before + _meta_element(0x0003, b"UI", sop_instance.encode("ascii", "replace")) + after
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return _PREAMBLE + group_length + body


# Explicit VR with a 4-byte length (PS3.5 7.1.2).
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# One unpack per element header: this walk runs for every instance received.
_EXPLICIT_HEADER = struct.Struct("<HH2sH")
_IMPLICIT_HEADER = struct.Struct("<HHI")
_LONG_LENGTH = struct.Struct("<I")
_UNDEFINED = 0xFFFFFFFF


def scan_tags(
    head: bytes, tags: set[int], *, implicit: bool, whole: bool = False
) -> dict[int, bytes] | None:
    """Values of top-level ``tags`` from the start of a little-endian data set.

    Walks the elements until all are found or the largest tag asked for is
    passed (the missing ones are then absent). With ``whole`` (``head`` is the
    whole data set, such as a C-FIND match), its end means the same. Returns
    None when it cannot be sure (an undefined length, such as a sequence, or a
    short head): the caller then lets pydicom read the data set properly.
    """
    found: dict[int, bytes] = {}
    last, wanted = max(tags), len(tags)
    offset, size = 0, len(head)
    header_at = (_IMPLICIT_HEADER if implicit else _EXPLICIT_HEADER).unpack_from
    long_length_at = _LONG_LENGTH.unpack_from
    while offset + 8 <= size:
        if implicit:
            group, element, length = header_at(head, offset)
            offset += 8
        else:
            group, element, vr, length = header_at(head, offset)
            if vr in _LONG_VRS:
                if offset + 12 > size:
                    return None
                (length,) = long_length_at(head, offset + 8)
                offset += 12
            else:
                offset += 8
        tag = group << 16 | element
        if tag > last:
            return found
        if length == _UNDEFINED:
            return None
        if tag in tags:
            end = offset + length
            if end > size:
                return None
            found[tag] = head[offset:end].rstrip(b"\x00 ")
            if len(found) == wanted:
                return found
        offset += length
    return found if whole and offset == size else None


# What placement needs of a data set (PS3.3 C.7): keyword by tag.
KEY_TAGS = {
    0x00100020: "PatientID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
}
KEYWORDS = list(KEY_TAGS.values())


# The same, by the tag as one little-endian 32-bit word (element in the high
# half), as it is read from an element's header.
_KEYS_BY_WORD = {(tag & 0xFFFF) << 16 | tag >> 16: name for tag, name in KEY_TAGS.items()}
_EXPLICIT_WORD_HEADER = struct.Struct("<I2sH")
_LAST_KEY_GROUP = max(tag >> 16 for tag in KEY_TAGS)
_IMPLICIT_WORD_HEADER = struct.Struct("<II")


def _walk_keys(head: bytes | memoryview, *, implicit: bool) -> dict[str, str] | None:
    """KEY_TAGS from the top level of a little-endian data set: scan_tags for
    the keys only, with fewer steps per element (this runs for every instance
    received; in CPython the walk was 40 % of receiving one). Ends when all are
    found or past their group (the missing ones are then absent); None when
    unsure (an undefined length, or the data ends first)."""
    found: dict[str, str] = {}
    offset, wanted, last_group, keys = 0, len(KEY_TAGS), _LAST_KEY_GROUP, _KEYS_BY_WORD
    try:
        if implicit:
            header_at = _IMPLICIT_WORD_HEADER.unpack_from
            while True:
                word, length = header_at(head, offset)
                if word & 0xFFFF > last_group:
                    break
                if length == _UNDEFINED:
                    return None
                offset += 8 + length
                if word in keys:
                    found[keys[word]] = bytes(head[offset - length : offset]).decode(
                        "utf-8", "replace"
                    )
                    if len(found) == wanted:
                        break
        else:
            header_at, long_length_at = _EXPLICIT_WORD_HEADER.unpack_from, _LONG_LENGTH.unpack_from
            long_vrs = _LONG_VRS
            while True:
                word, vr, length = header_at(head, offset)
                if word & 0xFFFF > last_group:
                    break
                if vr in long_vrs:
                    (length,) = long_length_at(head, offset + 8)
                    if length == _UNDEFINED:
                        return None
                    offset += 12 + length
                else:
                    offset += 8 + length
                if word in keys:
                    found[keys[word]] = bytes(head[offset - length : offset]).decode(
                        "utf-8", "replace"
                    )
                    if len(found) == wanted:
                        break
    except struct.error:  # the data ends first
        return None
    if offset > len(head):
        return None  # the data ends inside a value
    return {name: found.get(name, "").rstrip("\x00 ").strip() for name in KEYWORDS}


def keys_from_head(head: bytes | memoryview, transfer_syntax: str) -> dict[str, str] | None:
    """The placement keys from the first bytes of a data set, or None if unsure."""
    if transfer_syntax not in _NOT_EXPLICIT_LE:
        return _walk_keys(head, implicit=False)
    if transfer_syntax == _IMPLICIT_LE:
        return _walk_keys(head, implicit=True)
    if transfer_syntax in _DEFLATED:
        return _walk_keys(zlib.decompressobj(-zlib.MAX_WBITS).decompress(head), implicit=False)
    return None  # big endian: pydicom knows how
