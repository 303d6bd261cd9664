"""Placing received instances into a project's storage (DESIGN §5).

Layout: ``{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``
under the project's folder, every component sanitised: UIDs pass only when
they match ``^[0-9.]{1,64}$``, a PatientID only when it is plain letters,
digits, dot, dash and underscore; anything else is replaced by a hash. An
instance placed twice overwrites itself. This is the one function a
transform (pseudonymisation, later) joins.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from pulls.dicom.paths import safe_component
from pulls.dicom.receiving import HEAD_SIZE, scan_tags

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_KEYS = ["PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "Modality"]


def safe_name(value: str) -> str:
    """A folder name from a free-text tag value such as PatientID."""
    if _SAFE_NAME.match(value) and value not in (".", ".."):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"x{digest}"


@dataclass(frozen=True)
class Placed:
    path: Path  # relative to the project folder
    patient_id: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    modality: str
    size: int


_TAGS = {
    0x00100020: "PatientID",
    0x0020000D: "StudyInstanceUID",
    0x0020000E: "SeriesInstanceUID",
    0x00080018: "SOPInstanceUID",
    0x00080060: "Modality",
}
_META_TS = 0x00020010
_IMPLICIT = b"1.2.840.10008.1.2"
_EXPLICIT = b"1.2.840.10008.1.2.1"


def _fast_keys(head: bytes) -> dict[str, str] | None:
    """The keys from a file's first bytes without pydicom (the common case)."""
    if head[128:132] != b"DICM" or head[132:136] != b"\x02\x00\x00\x00":
        return None
    meta_end = 144 + int.from_bytes(head[140:144], "little")
    meta = scan_tags(head[132:meta_end], {_META_TS}, implicit=False)
    if not meta or meta[_META_TS] not in (_IMPLICIT, _EXPLICIT):
        return None  # deflated or big endian: pydicom knows how
    found = scan_tags(head[meta_end:], set(_TAGS), implicit=meta[_META_TS] == _IMPLICIT)
    if found is None:
        return None
    return {
        name: found.get(tag, b"").decode("utf-8", "replace").strip() for tag, name in _TAGS.items()
    }


def header_keys(path: Path) -> dict[str, str]:
    with open(path, "rb") as fh:
        head = fh.read(HEAD_SIZE)
    keys = _fast_keys(head)
    if keys is not None:
        return keys
    ds = dcmread(path, stop_before_pixels=True, specific_tags=_KEYS)
    return {key: str(ds.get(key, "") or "") for key in _KEYS}


def _move(staged: Path, final: Path) -> None:
    """Rename; across file systems, copy to a temp name, rename, then delete."""
    try:
        os.replace(staged, final)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = final.with_name(f".{final.name}.part")
        try:
            shutil.copyfile(staged, tmp)
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        staged.unlink()


def place_instance(
    staged: Path, project_dir: Path, *, keys: dict[str, str] | None = None
) -> Placed:
    """Move one staged file into the project's layout (rename; copy across devices)."""
    keys = keys or header_keys(staged)
    relative = (
        Path(safe_name(keys["PatientID"] or "unknown-patient"))
        / safe_component(keys["StudyInstanceUID"] or "unknown-study")
        / safe_component(keys["SeriesInstanceUID"] or "unknown-series")
        / f"{safe_component(keys['SOPInstanceUID'] or staged.stem)}.dcm"
    )
    final = project_dir / relative
    size = staged.stat().st_size
    try:
        _move(staged, final)
    except FileNotFoundError:  # the first instance of this series
        final.parent.mkdir(parents=True, exist_ok=True)
        _move(staged, final)
    return Placed(
        path=relative,
        patient_id=keys["PatientID"],
        study_instance_uid=keys["StudyInstanceUID"],
        series_instance_uid=keys["SeriesInstanceUID"],
        sop_instance_uid=keys["SOPInstanceUID"],
        modality=keys["Modality"],
        size=size,
    )
