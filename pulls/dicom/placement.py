"""Placing received instances into a project's storage (DESIGN §5).

Layout: ``{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``
under the project's folder, every component sanitised: UIDs pass only when
they match ``^[0-9.]{1,64}$``, a PatientID only when it is plain letters,
digits, dot, dash and underscore; anything else is replaced by a hash. An
instance placed twice overwrites itself. This is the one function a
transform (pseudonymisation, later) joins.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread

from pulls.dicom.paths import safe_component

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


def header_keys(path: Path) -> dict[str, str]:
    ds = dcmread(path, stop_before_pixels=True, specific_tags=_KEYS)
    return {key: str(ds.get(key, "") or "") for key in _KEYS}


def place_instance(staged: Path, project_dir: Path) -> Placed:
    """Move one staged file into the project's layout (rename; copy across devices)."""
    keys = header_keys(staged)
    relative = (
        Path(safe_name(keys["PatientID"] or "unknown-patient"))
        / safe_component(keys["StudyInstanceUID"] or "unknown-study")
        / safe_component(keys["SeriesInstanceUID"] or "unknown-series")
        / f"{safe_component(keys['SOPInstanceUID'] or staged.stem)}.dcm"
    )
    final = project_dir / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    size = staged.stat().st_size
    try:
        os.replace(staged, final)
    except OSError as exc:
        if exc.errno != 18:  # EXDEV: staging and storage on different file systems
            raise
        tmp = final.with_name(f".{final.name}.part")
        shutil.copyfile(staged, tmp)
        os.replace(tmp, final)
        staged.unlink()
    return Placed(
        path=relative,
        patient_id=keys["PatientID"],
        study_instance_uid=keys["StudyInstanceUID"],
        series_instance_uid=keys["SeriesInstanceUID"],
        sop_instance_uid=keys["SOPInstanceUID"],
        modality=keys["Modality"],
        size=size,
    )
