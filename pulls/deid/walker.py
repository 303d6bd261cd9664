"""De-identification of a data set's bytes, element by element (no pydicom objects).

The data set is read as it is encoded (implicit or explicit VR, little or big
endian) and written out in the same encoding: what is kept goes out as the
very bytes it came in (pixel data and every binary value untouched, views of
the input, no copy); what changes is encoded anew. Sequences and their items
go out with undefined lengths, so nothing above an element that changes needs
its length computed again. This is what makes pseudonymisation cost a few
hundred microseconds an instance rather than pydicom's milliseconds
(bench/deidentify.py).

The actions come from ``profile``; the values from ``keys``.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from pydicom.datadict import dictionary_VR

from pulls.deid.keys import STANDARD_UID_ROOT, Keys
from pulls.deid.profile import (
    ACCESSION,
    CLEAN,
    DUMMY,
    EMPTY,
    KEEP,
    PSEUDONYM,
    REMOVE,
    UID,
    Actions,
    Options,
)

UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
# Free text that may name the patient: cleaned of the patient's name, IDs and
# accession number wherever it is kept.
TEXT_VRS = frozenset({b"LO", b"SH", b"ST", b"LT", b"UT", b"UC"})
_DUMMY_TEXT = b"ANONYMIZED"
_DUMMY = {b"DA": b"19000101", b"DT": b"19000101000000", b"TM": b"000000", b"IS": b"0",
          b"DS": b"0", b"AS": b"000D", b"PN": b"ANONYMIZED"}  # fmt: skip
_MAX_LENGTH = {b"AE": 16, b"CS": 16, b"SH": 16, b"LO": 64, b"PN": 64}

# Top-level attributes read before the walk (the patient decides the shift and
# the words to clean; the rest says where the instance goes and what it is).
SOURCE_TAGS = {
    0x00080005: "SpecificCharacterSet",
    0x00080008: "ImageType",
    0x00080016: "SOPClassUID",
    0x00080018: "SOPInstanceUID",
    0x00080050: "AccessionNumber",
    0x00080060: "Modality",
    0x00080064: "ConversionType",
    0x00100010: "PatientName",
    0x00100020: "PatientID",
    0x00100030: "PatientBirthDate",
    0x00101000: "OtherPatientIDs",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00200010: "StudyID",
    0x00280301: "BurnedInAnnotation",
}
_LAST_SOURCE_TAG = max(SOURCE_TAGS)

# Written into every de-identified data set (PS3.15 E.1.1), in tag order.
_PATIENT_IDENTITY_REMOVED = 0x00120062
_METHOD = 0x00120063
_METHOD_CODES = 0x00120064
_TEMPORAL_MODIFIED = 0x00280303
_ADDED = (_PATIENT_IDENTITY_REMOVED, _METHOD, _METHOD_CODES, _TEMPORAL_MODIFIED)


class UnreadableDataSet(ValueError):
    """The bytes are not a data set this walker can read (truncated, or a length
    that points past the end)."""


@functools.cache
def _implicit_vr(tag: int) -> bytes:
    """The VR of a tag as the dictionary gives it (implicit VR carries none);
    UN for private and unknown ones, the first of alternatives ("US or SS")."""
    try:
        return dictionary_VR(tag)[:2].encode("ascii")
    except KeyError:
        return b"UN"


@dataclass
class Encoding:
    implicit: bool
    little: bool = True

    def __post_init__(self) -> None:
        order = "<" if self.little else ">"
        self.tag_at = struct.Struct(f"{order}HH").unpack_from
        self.u32_at = struct.Struct(f"{order}I").unpack_from
        self.u16_at = struct.Struct(f"{order}H").unpack_from
        self.short = struct.Struct(f"{order}HH2sH").pack
        self.long = struct.Struct(f"{order}HH2sHI").pack
        self.plain = struct.Struct(f"{order}HHI").pack

    def header(self, tag: int, vr: bytes, length: int) -> bytes:
        group, element = tag >> 16, tag & 0xFFFF
        if self.implicit:
            return self.plain(group, element, length)
        if vr in LONG_VRS:
            return self.long(group, element, vr, 0, length)
        return self.short(group, element, vr, length)

    def delimiter(self, tag: int, length: int = 0) -> bytes:
        return self.plain(tag >> 16, tag & 0xFFFF, length)


# An element as the walk sees it: (tag, vr, start of its header, start of its
# value, end, undefined length). Plain tuples: one is made per element.
Element = tuple[int, bytes, int, int, int, bool]


def elements(
    data: bytes, start: int, end: int, enc: Encoding, stop: list[int] | None = None
) -> Iterator[Element]:
    """The elements of a data set (or an item's) between ``start`` and ``end``,
    up to an item delimiter; ``stop[0]`` is then where the data set ended (past
    the delimiter, if there was one)."""
    pos = start
    u32, u16, tag_at, implicit = enc.u32_at, enc.u16_at, enc.tag_at, enc.implicit
    try:
        while pos < end:
            group, number = tag_at(data, pos)
            tag = group << 16 | number
            if tag == ITEM_END:
                pos += 8
                break
            if implicit:
                vr = _implicit_vr(tag)
                (length,) = u32(data, pos + 4)
                value = pos + 8
            else:
                vr = data[pos + 4 : pos + 6]
                if vr in LONG_VRS:
                    (length,) = u32(data, pos + 8)
                    value = pos + 12
                else:
                    (length,) = u16(data, pos + 6)
                    value = pos + 8
            if length == UNDEFINED:
                # A sequence (or UN holding one, in implicit VR: PS3.5 6.2.2) or
                # encapsulated pixel data: its items, up to the sequence delimiter.
                inner = Encoding(True, enc.little) if vr == b"UN" else enc
                after = skip_items(data, value, end, inner)
                yield tag, vr, pos, value, after, True
                pos = after
                continue
            after = value + length
            if after > end:
                raise UnreadableDataSet("an element's length points past the end of the data")
            yield tag, vr, pos, value, after, False
            pos = after
    except struct.error:
        raise UnreadableDataSet("the data set ends inside an element's header") from None
    if stop is not None:
        stop[0] = pos


def item_at(data: bytes, pos: int, enc: Encoding) -> tuple[int, int]:
    """(ITEM or SEQUENCE_END, length) of the item header at ``pos``."""
    group, number = enc.tag_at(data, pos)
    tag = group << 16 | number
    if tag != ITEM and tag != SEQUENCE_END:
        raise UnreadableDataSet("a sequence holds something other than items")
    return tag, enc.u32_at(data, pos + 4)[0]


def skip_items(data: bytes, pos: int, end: int, enc: Encoding) -> int:
    """Where the items that start at ``pos`` end (past the sequence delimiter)."""
    stop = [pos]
    while pos + 8 <= end:
        tag, length = item_at(data, pos, enc)
        pos += 8
        if tag == SEQUENCE_END:
            return pos
        if length != UNDEFINED:
            pos += length
            continue
        for _ in elements(data, pos, end, enc, stop):
            pass
        pos = stop[0]
    raise UnreadableDataSet("a sequence has no end")


def source_values(data: bytes, enc: Encoding, start: int = 0) -> dict[str, bytes]:
    """SOURCE_TAGS from the top level (raw values, padding stripped)."""
    found: dict[str, bytes] = {}
    for tag, _, _, value, end, undefined in elements(data, start, len(data), enc):
        if tag > _LAST_SOURCE_TAG:
            break
        name = SOURCE_TAGS.get(tag)
        if name is not None and not undefined:
            found[name] = data[value:end].rstrip(b"\x00 ")
    return found


def shift_bytes(vr: bytes, value: bytes, days: int) -> bytes | None:
    """Dates (DA) and date-times (DT) moved back ``days``; a DA range moves
    whole; None for a value that is not a date (it is then emptied)."""
    out = []
    for part in value.rstrip(b"\x00 ").split(b"\\"):
        part = part.strip()
        if vr == b"DA" and b"-" in part:  # a range (in a query)
            ends = [shift_bytes(vr, end, days) if end else b"" for end in part.split(b"-", 1)]
            if None in ends:
                return None
            out.append(b"-".join(ends))  # type: ignore[arg-type]
            continue
        if not part:
            out.append(b"")
            continue
        if len(part) < 8 or not part[:8].isdigit():
            return None
        try:
            day = date(int(part[:4]), int(part[4:6]), int(part[6:8]))
        except ValueError:
            return None
        moved = (day - timedelta(days=days)).strftime("%Y%m%d").encode("ascii")
        out.append(moved + (part[8:] if vr == b"DT" else b""))
    return b"\\".join(out)


def shift_text(vr: str, value: str, days: int) -> str | None:
    moved = shift_bytes(vr.encode("ascii"), value.encode("ascii", "replace"), days)
    return None if moved is None else moved.decode("ascii")


def words_pattern(source: Mapping[str, bytes]) -> re.Pattern[bytes] | None:
    """What a kept text must not contain: the patient's name (each part of at
    least three characters), IDs, accession number and birth date."""
    words = set()
    for part in re.split(rb"[\^=\\]", source.get("PatientName", b"")):
        if len(part.strip()) >= 3:
            words.add(part.strip())
    for key in ("PatientID", "AccessionNumber", "PatientBirthDate", "OtherPatientIDs"):
        for value in source.get(key, b"").split(b"\\"):
            if len(value.strip()) >= 3:
                words.add(value.strip())
    if not words:
        return None
    ordered = sorted(words, key=len, reverse=True)  # the longest first
    return re.compile(b"|".join(re.escape(w) for w in ordered), re.IGNORECASE)


@dataclass
class Walk:
    """One data set's de-identification: what to do, and what it came to."""

    actions: Actions
    options: Options
    keys: Keys
    enc: Encoding
    source: dict[str, bytes]
    patient_id: str
    shift: int
    words: re.Pattern[bytes] | None
    out: list = field(default_factory=list)

    def uid(self, value: bytes) -> bytes:
        text = value.rstrip(b"\x00 ").decode("ascii", "replace")
        mapped = "\\".join(self.keys.uid(part.strip()) for part in text.split("\\"))
        return mapped.encode("ascii")

    def shifted(self, vr: bytes, value: bytes) -> bytes | None:
        return shift_bytes(vr, value, self.shift)

    def clean(self, value: bytes) -> bytes:
        if self.words is None or not self.words.search(value):
            return value
        return b" ".join(self.words.sub(b"", value).split())

    def emit(self, tag: int, vr: bytes, value: bytes) -> None:
        if len(value) % 2:
            value += b"\x00" if vr in (b"UI", b"OB", b"UN") else b" "
        self.out.append(self.enc.header(tag, vr, len(value)))
        if value:
            self.out.append(value)

    def dummy(self, vr: bytes) -> bytes:
        if vr in _DUMMY:
            return _DUMMY[vr]
        if vr in TEXT_VRS or vr in (b"AE", b"CS", b"UR"):
            return _DUMMY_TEXT[: _MAX_LENGTH.get(vr, 64)]
        return b""  # binary: emptied

    # -- the walk ---------------------------------------------------------------

    def dataset(self, data: bytes, view: memoryview, start: int, end: int, *, top: bool) -> int:
        """Walk the elements from ``start`` (to ``end`` or an item delimiter);
        returns where they ended."""
        creators: dict[tuple[int, int], str] = {}
        added = self._added() if top else []
        stop = [start]
        for element in elements(data, start, end, self.enc, stop):
            tag = element[0]
            while added and added[0][0] <= tag:
                self.out.extend(added.pop(0)[1])
            if top and tag in _ADDED:
                continue  # ours replaces the source's
            self.element(data, view, element, creators)
        for _, parts in added:
            self.out.extend(parts)
        return stop[0]

    def _action(self, tag: int, vr: bytes) -> int:
        group, number = tag >> 16, tag & 0xFFFF
        if number == 0 or group == 0x0002:
            return REMOVE  # group lengths (wrong once anything changes); file meta
        action = self.actions.of(tag)
        if action is not None:
            return action
        if vr == b"UI":
            return UID
        if vr in (b"DA", b"DT"):
            return CLEAN
        if vr == b"PN":
            return EMPTY  # a person the table does not know of
        return KEEP

    def _private_kept(self, data: bytes, element: Element, creators: dict) -> bool:
        """Private attributes go, but those Table E.3.10-1 calls safe when the
        project retains them (and their blocks' creators)."""
        safe = self.actions.safe_private
        if not safe:
            return False
        tag, _, _, value, end, _ = element
        group, number = tag >> 16, tag & 0xFFFF
        if 0x0010 <= number <= 0x00FF:
            name = data[value:end].rstrip(b"\x00 ").decode("latin-1")
            creators[(group, number)] = name
            return any(creator == name for creator, _, _ in safe)
        creator = creators.get((group, number >> 8))
        return creator is not None and (creator, group, number & 0xFF) in safe

    def element(self, data: bytes, view: memoryview, element: Element, creators: dict) -> None:
        tag, vr, start, value, end, undefined = element
        if (tag >> 16) & 1:
            if not self._private_kept(data, element, creators):
                return
            action = KEEP
        else:
            action = self._action(tag, vr)
        if action == REMOVE:
            return
        if undefined and vr != b"SQ" and tag != 0x7FE00010:
            return  # UN holding a sequence of unknown attributes: nothing says what is in it
        if vr == b"SQ":
            if action == EMPTY:
                self.out.append(self.enc.header(tag, b"SQ", 0))
            else:
                self.sequence(data, view, tag, value, end, undefined)
            return
        if action == EMPTY:
            self.out.append(self.enc.header(tag, vr, 0))
            return
        if action == PSEUDONYM:
            self.emit(tag, vr, self.keys.patient_id(self.patient_id).encode("ascii"))
            return
        if action == ACCESSION:
            original = data[value:end].rstrip(b"\x00 ").strip()
            replaced = self.keys.accession(original.decode("latin-1")) if original else ""
            self.emit(tag, vr, replaced.encode("ascii"))
            return
        if action == DUMMY and vr not in (b"DA", b"DT", b"UI"):
            self.emit(tag, vr, self.dummy(vr))
            return
        # KEEP, CLEAN, UID, or a dummy date or UID: the safety nets apply.
        if vr == b"UI":
            self.emit(tag, vr, self.uid(data[value:end]))
            return
        if vr in (b"DA", b"DT"):
            moved = self.shifted(vr, data[value:end]) if self.options.retain_dates else None
            if moved is None and action == DUMMY:
                moved = _DUMMY[vr]
            self.emit(tag, vr, moved or b"")
            return
        if vr in TEXT_VRS and self.words is not None:
            original = data[value:end]
            cleaned = self.clean(original)
            if cleaned is not original:
                self.emit(tag, vr, cleaned)
                return
        self.out.append(view[start:end])  # as it came

    def sequence(
        self, data: bytes, view: memoryview, tag: int, start: int, end: int, undefined: bool
    ) -> None:
        """A sequence, item by item, each walked; written with undefined lengths."""
        enc = self.enc
        out = self.out
        out.append(enc.header(tag, b"SQ", UNDEFINED))
        pos = start
        while pos + 8 <= end:
            item, length = item_at(data, pos, enc)
            pos += 8
            if item == SEQUENCE_END:
                break
            out.append(enc.delimiter(ITEM, UNDEFINED))
            if length == UNDEFINED:
                pos = self.dataset(data, view, pos, end, top=False)
            else:
                self.dataset(data, view, pos, pos + length, top=False)
                pos += length
            out.append(enc.delimiter(ITEM_END))
        out.append(enc.delimiter(SEQUENCE_END))

    def _added(self) -> list[tuple[int, list]]:
        """The de-identification attributes, encoded, by tag."""
        parts = []

        def encoded(tag: int, vr: bytes, value: bytes) -> list:
            saved, self.out = self.out, []
            self.emit(tag, vr, value)
            made, self.out = self.out, saved
            return made

        parts.append((_PATIENT_IDENTITY_REMOVED, encoded(_PATIENT_IDENTITY_REMOVED, b"CS", b"YES")))
        parts.append((_METHOD, encoded(_METHOD, b"LO", self.options.method().encode("ascii"))))
        codes = [self.enc.header(_METHOD_CODES, b"SQ", UNDEFINED)]
        for value, meaning in self.options.codes():
            codes.append(self.enc.delimiter(ITEM, UNDEFINED))
            codes += encoded(0x00080100, b"SH", value.encode("ascii"))
            codes += encoded(0x00080102, b"SH", b"DCM")
            codes += encoded(0x00080104, b"LO", meaning.encode("ascii"))
            codes.append(self.enc.delimiter(ITEM_END))
        codes.append(self.enc.delimiter(SEQUENCE_END))
        parts.append((_METHOD_CODES, codes))
        if self.options.retain_dates:
            parts.append((_TEMPORAL_MODIFIED, encoded(_TEMPORAL_MODIFIED, b"CS", b"MODIFIED")))
        return parts


def deidentify_dataset(
    data: bytes,
    *,
    implicit: bool,
    little: bool,
    actions: Actions,
    options: Options,
    keys: Keys,
    source: dict[str, bytes] | None = None,
    start: int = 0,
) -> tuple[list, dict[str, bytes]]:
    """The de-identified data set that starts at ``start`` of ``data`` (bytes,
    or a memory map of a file too big to read) as a list of byte strings
    (views of ``data`` where unchanged), and the source values read first."""
    enc = Encoding(implicit, little)
    if source is None:
        source = source_values(data, enc, start)
    patient_id = source.get("PatientID", b"").strip().decode("utf-8", "replace")
    walk = Walk(
        actions=actions, options=options, keys=keys, enc=enc, source=source,
        patient_id=patient_id, shift=keys.shift_days(patient_id), words=words_pattern(source),
    )  # fmt: skip
    walk.dataset(data, memoryview(data), start, len(data), top=True)
    return walk.out, source


def is_standard_uid(value: str) -> bool:
    return value.startswith(STANDARD_UID_ROOT)
