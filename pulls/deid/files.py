"""Pseudonymising instances on their way into a project's folder.

``Pseudonymiser.place`` takes a received data set (its bytes and transfer
syntax) or a DICOM file, and writes the de-identified file at its place in the
project's layout, named by pseudonymised values only (``paths.layout_relpath``:
pseudonym / study UID / series UID / SOP UID). The original is never written
into the project: the new file is written under a temp name in the project's
``.incoming`` and renamed into place. Instances that may show burned-in text
are set aside instead (``BurnedIn``), unless the project keeps them.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pulls.deid.keys import Keys
from pulls.deid.profile import Options, actions_for
from pulls.deid.walker import Encoding, UnreadableDataSet, deidentify_dataset, source_values
from pulls.dicom.headers import file_header, scan_tags
from pulls.dicom.paths import layout_relpath
from pulls.dicom.receiving import Placed, create_file, write_all

# Files up to this size are read; bigger ones (multi-frame, video) memory-mapped.
_READ_WHOLE = 32 << 20
IMPLICIT_LE = "1.2.840.10008.1.2"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
DEFLATED = frozenset(
    {"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95", "1.2.840.10008.1.2.4.205"}
)

# Classes whose pixels are often a picture of a screen, a form or a face.
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_RISKY_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.3.1": "an ultrasound multi-frame image",
    "1.2.840.10008.5.1.4.1.1.6.1": "an ultrasound image",
    "1.2.840.10008.5.1.4.1.1.6.2": "an enhanced ultrasound volume",
    "1.2.840.10008.5.1.4.1.1.104.1": "an encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.104.2": "an encapsulated CDA document",
    "1.2.840.10008.5.1.4.1.1.77.1.1.1": "a video endoscopic image",
    "1.2.840.10008.5.1.4.1.1.77.1.4": "a VL photographic image",
    "1.2.840.10008.5.1.4.1.1.77.1.4.1": "a video photographic image",
}
_RISKY_MODALITIES = {
    "US": "an ultrasound image", "SC": "a secondary capture", "DOC": "a document",
    "XC": "a photograph", "ES": "an endoscopy image",
}  # fmt: skip
_RISKY_CONVERSIONS = {"WSD": "a workstation capture", "SD": "a scanned document",
                      "SI": "a scanned image", "DV": "digitized video"}  # fmt: skip


def burned_in_reason(source: Mapping[str, bytes]) -> str | None:
    """Why an instance may show burned-in text (PS3.15 E.1.1 leaves pixels to
    the de-identifier): BurnedInAnnotation YES, or absent on a kind of object
    that usually has some; None when it says NO or is of another kind."""
    said = source.get("BurnedInAnnotation", b"").strip().upper()
    if said == b"YES":
        return "its BurnedInAnnotation is YES: it shows burned-in text"
    if said == b"NO":
        return None
    sop_class = source.get("SOPClassUID", b"").decode("ascii", "replace").strip()
    kind = _RISKY_CLASSES.get(sop_class)
    if kind is None and sop_class.startswith(_SECONDARY_CAPTURE):
        kind = "a secondary capture"
    modality = source.get("Modality", b"").decode("ascii", "replace").strip().upper()
    kind = kind or _RISKY_MODALITIES.get(modality)
    conversion = source.get("ConversionType", b"").decode("ascii", "replace").strip().upper()
    kind = kind or _RISKY_CONVERSIONS.get(conversion)
    if kind is None:
        return None
    return f"it is {kind}, which often shows burned-in text, and does not say it has none"


class BurnedIn(Exception):
    """The instance may show burned-in text and the project does not keep such."""

    def __init__(self, reason: str, source: dict[str, str]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source


@dataclass(frozen=True)
class Deidentified:
    """A de-identified instance in its place."""

    relative: str  # in the project's folder
    size: int
    keys: dict[str, str]  # as written: PatientID, the UIDs, Modality, SOP class, syntax
    source: dict[str, str]  # the originals the mapping keeps: PatientID, study UID, accession
    shift_days: int
    burned_in: str  # why it may show burned-in text ("" if not)

    def placed(self, relative: str | None = None) -> Placed:
        """As a retrieval records it: the keys as written, the originals beside."""
        keys, source = self.keys, self.source
        return Placed(
            path=relative or self.relative,
            patient_id=keys["PatientID"],
            study_instance_uid=keys["StudyInstanceUID"],
            series_instance_uid=keys["SeriesInstanceUID"],
            sop_instance_uid=keys["SOPInstanceUID"],
            modality=keys["Modality"],
            size=self.size,
            sop_class_uid=keys["SOPClassUID"],
            transfer_syntax=keys["TransferSyntaxUID"],
            source_patient_id=source["PatientID"],
            source_study_uid=source["StudyInstanceUID"],
            source_series_uid=source["SeriesInstanceUID"],
            source_accession=source["AccessionNumber"],
            shift_days=self.shift_days,
            burned_in=self.burned_in,
        )


def _text(value: bytes) -> str:
    return value.strip().decode("utf-8", "replace")


class Pseudonymiser:
    """One project's de-identification: its key, options and given pseudonyms."""

    def __init__(
        self,
        secret: bytes,
        options: Options,
        *,
        given: Mapping[str, str] | None = None,
        keep_burned_in: bool = False,
    ) -> None:
        self.options = options
        self.actions = actions_for(options)
        self.keys = Keys(secret, given=given)
        self.keep_burned_in = keep_burned_in

    def place(
        self, data: bytes, transfer_syntax: str, root: str, *, sop_class: str = "", start: int = 0
    ) -> Deidentified:
        """Write the de-identified data set (at ``start`` of ``data``: its bytes
        as received, or a memory map) at its place under ``root``. Raises
        BurnedIn, UnreadableDataSet or OSError; nothing is left behind then."""
        deflated = transfer_syntax in DEFLATED
        if deflated:
            data, start = zlib.decompress(data[start:], -zlib.MAX_WBITS), 0
        implicit, little = transfer_syntax == IMPLICIT_LE, transfer_syntax != BIG_ENDIAN
        source = source_values(data, Encoding(implicit, little), start)
        reason = burned_in_reason(source)
        if reason and not self.keep_burned_in:
            raise BurnedIn(reason, {k: _text(v) for k, v in source.items()})
        parts, source = deidentify_dataset(
            data, implicit=implicit, little=little, actions=self.actions,
            options=self.options, keys=self.keys, source=source, start=start,
        )  # fmt: skip
        if deflated:
            packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
            parts = [b"".join(packer.compress(part) for part in parts) + packer.flush()]
        original = {k: _text(v) for k, v in source.items()}
        keys = self._keys(original, sop_class or original.get("SOPClassUID", ""))
        keys["TransferSyntaxUID"] = transfer_syntax
        header = file_header(
            sop_class=keys["SOPClassUID"], sop_instance=keys["SOPInstanceUID"],
            transfer_syntax=transfer_syntax, source_ae="",
        )  # fmt: skip
        relative = layout_relpath(keys)
        size = _write(root, relative, [header, *parts])
        del parts  # views of ``data``: a memory map may close now
        return Deidentified(
            relative=relative,
            size=size,
            keys=keys,
            source={
                "PatientID": original.get("PatientID", ""),
                "StudyInstanceUID": original.get("StudyInstanceUID", ""),
                "SeriesInstanceUID": original.get("SeriesInstanceUID", ""),
                "SOPInstanceUID": original.get("SOPInstanceUID", ""),
                "AccessionNumber": original.get("AccessionNumber", ""),
            },
            shift_days=self.keys.shift_days(original.get("PatientID", "")),
            burned_in=reason or "",
        )

    def place_file(self, path: str | Path, root: str) -> Deidentified:
        """The same for a DICOM file (Part 10: preamble, DICM, file meta); a big
        one is memory-mapped, not read."""
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size <= _READ_WHOLE:
                return self._place_part10(fh.read(), root)
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            return self._place_part10(mapped, root)
        finally:
            with contextlib.suppress(BufferError):  # views an error's frames still hold:
                mapped.close()  # the map closes when they go

    def _place_part10(self, data, root: str) -> Deidentified:
        if data[128:132] != b"DICM":
            raise UnreadableDataSet("not a DICOM file (no DICM after the preamble)")
        meta_end = 144 + int.from_bytes(data[140:144], "little")
        meta = scan_tags(data[132:meta_end], {0x00020002, 0x00020010}, implicit=False, whole=True)
        if not meta or 0x00020010 not in meta:
            raise UnreadableDataSet("the file meta names no transfer syntax")
        syntax = meta[0x00020010].decode("ascii", "replace").strip("\x00 ")
        sop_class = meta.get(0x00020002, b"").decode("ascii", "replace").strip("\x00 ")
        return self.place(data, syntax, root, sop_class=sop_class, start=meta_end)

    def _keys(self, original: dict[str, str], sop_class: str) -> dict[str, str]:
        keys = self.keys
        return {
            "PatientID": keys.patient_id(original.get("PatientID", "")),
            "StudyInstanceUID": keys.uid(original.get("StudyInstanceUID", "")),
            "SeriesInstanceUID": keys.uid(original.get("SeriesInstanceUID", "")),
            "SOPInstanceUID": keys.uid(original.get("SOPInstanceUID", "")),
            "Modality": original.get("Modality", ""),
            "SOPClassUID": sop_class,
        }


def _write(root: str, relative: str, parts: list) -> int:
    """Write ``parts`` to ``root/relative`` atomically (a temp in ``root/.incoming``)."""
    incoming = f"{root}/.incoming"
    name = f".deid-{os.getpid()}-{id(parts)}.part"
    fd = create_file(incoming, name)
    temp = f"{incoming}/{name}"
    try:
        try:
            write_all(fd, parts)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        final = f"{root}/{relative}"
        try:
            os.replace(temp, final)
        except FileNotFoundError:
            os.makedirs(final.rpartition("/")[0], exist_ok=True)
            os.replace(temp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return size
