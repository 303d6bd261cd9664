"""The staging area: received instances by study, ``staging/<study>/<sop>.dcm``.

Written by ``wire.InstanceWriter`` (storage SCP and C-GET), read by the worker
that asked for the instances.
"""

from __future__ import annotations

from pathlib import Path

from pulls.dicom.paths import safe_component

TEMP_PREFIX = ".incoming-"


def study_name(study_uid: str) -> str:
    """The folder name of a study; sanitised (see ``safe_component``)."""
    return safe_component(study_uid or "unknown-study")


def study_dir(staging: Path, study_uid: str) -> Path:
    return staging / study_name(study_uid)


def instance_name(sop_uid: str) -> str:
    return f"{safe_component(sop_uid)}.dcm"


def staged_sop_files(staging: Path, study_uid: str) -> list[Path]:
    """The complete files of a study (temp files of writes in progress excluded)."""
    folder = study_dir(staging, study_uid)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.suffix == ".dcm" and not p.name.startswith(".")]
