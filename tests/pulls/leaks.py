"""The leak scan: every identifying value of the source files, looked for in
the bytes of every output file and in every path under the output folder.

Values are taken as the bytes the source holds (a name in ISO 2022 or GB18030
is looked for as it is encoded), from every level of every sequence.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataset import Dataset

# Attributes that identify a person, a place or a device (PS3.15 Table E.1-1
# removes or replaces them all; these are the ones archives fill).
IDENTIFYING = {
    "PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate", "StudyID",
    "InstitutionName", "InstitutionAddress", "PatientAddress", "InstitutionalDepartmentName",
    "StationName", "DeviceSerialNumber", "PatientTelephoneNumbers", "RequestingService",
    "IssuerOfPatientID", "MedicalRecordLocator",
}  # fmt: skip
# UIDs that name a kind of thing (a class, a syntax, a scheme), not an instance.
CLASS_UIDS = {
    "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
    "ImplementationClassUID", "CodingSchemeUID", "ReferencedSOPClassUIDInFile",
    "ContextGroupExtensionCreatorUID", "MappingResourceUID", "RelatedGeneralSOPClassUID",
    "OriginalSpecializedSOPClassUID", "SOPClassesInStudy",
}  # fmt: skip


@dataclass
class Identifying:
    """What a set of source files must not let out, by kind."""

    names: set[bytes] = field(default_factory=set)  # each part of a name, 3+ characters
    ids: set[bytes] = field(default_factory=set)
    uids: set[bytes] = field(default_factory=set)
    dates: dict[bytes, set[bytes]] = field(default_factory=dict)  # by PatientID

    def all(self) -> Iterable[tuple[str, bytes]]:
        for kind in ("names", "ids", "uids"):
            for value in getattr(self, kind):
                yield kind, value
        for values in self.dates.values():
            for value in values:
                yield "dates", value


def _raw_elements(ds: Dataset):
    """(keyword, VR, raw value bytes) of every element, sequences walked."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = raw.VR or (dictionary_VR(tag) if not tag.is_private else "UN")
        if vr == "SQ":
            for item in ds[tag].value:
                yield from _raw_elements(item)
            continue
        value = raw.value
        if isinstance(value, (bytes, bytearray)):
            yield keyword_for_tag(tag), vr, bytes(value)


def collect(paths: Iterable[Path]) -> Identifying:
    found = Identifying()
    for path in paths:
        ds = dcmread(path)
        patient = str(ds.get("PatientID", "")).encode()
        for keyword, vr, value in _raw_elements(ds):
            for part in value.rstrip(b"\x00 ").split(b"\\"):
                part = part.strip()
                if vr == "PN":
                    for piece in re.split(rb"[\^=]", part):
                        if len(piece.strip()) >= 3:
                            found.names.add(piece.strip())
                elif keyword in IDENTIFYING:
                    if len(part) >= 3:
                        found.ids.add(part)
                elif vr == "UI" and keyword not in CLASS_UIDS:
                    if part and not part.startswith(b"1.2.840.10008."):
                        found.uids.add(part)
                elif vr in ("DA", "DT") and len(part) >= 8 and part[:8].isdigit():
                    found.dates.setdefault(patient, set()).add(part[:8])
    return found


def _moved(day: bytes, days: int) -> bytes | None:
    try:
        when = date(int(day[:4]), int(day[4:6]), int(day[6:8]))
    except ValueError:
        return None
    return (when - timedelta(days=days)).strftime("%Y%m%d").encode()


def leaks(
    source: Identifying,
    output_root: Path,
    *,
    shifts: dict[bytes, int] | None = None,
    outputs_of: dict[bytes, set[Path]] | None = None,
) -> list[str]:
    """Every identifying value found in an output file's bytes or in a path.

    Dates are looked for in the outputs of their own patient (``outputs_of``;
    another patient's moved dates may fall on them); a date that is also one of
    the patient's dates moved by the patient's shift (``shifts``) is the moved
    one, not the original, and is not counted."""
    found = []
    outputs = sorted(p for p in output_root.rglob("*") if p.is_file())
    everything = [(kind, value) for kind, value in source.all() if kind != "dates"]
    for path in outputs:
        data = path.read_bytes()
        relative = str(path.relative_to(output_root)).encode()
        for kind, value in everything:
            if value in data:
                found.append(f"{kind} {value!r} in {relative.decode()}")
            if value in relative:
                found.append(f"{kind} {value!r} in the path {relative.decode()}")
        for patient, days in source.dates.items():
            if outputs_of is not None and path not in outputs_of.get(patient, ()):
                continue
            shift = (shifts or {}).get(patient)
            moved = {_moved(d, shift) for d in days} if shift is not None else set()
            for day in days - moved:
                if day in data:
                    found.append(f"date {day!r} of patient {patient!r} in {relative.decode()}")
    return found
