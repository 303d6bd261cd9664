"""The staging area: received instances by study, ``staging/<study>/<sop>.dcm``.

Written by ``wire.InstanceWriter`` (storage SCP and C-GET), read by the worker
that asked for the instances.
"""

from __future__ import annotations

import os
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


def staged_names(staging: Path, study_uid: str) -> list[str]:
    """The names of a study's complete files (temp files of writes in progress excluded)."""
    try:
        names = os.listdir(study_dir(staging, study_uid))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [name for name in names if name.endswith(".dcm") and not name.startswith(".")]


def staged_sop_files(staging: Path, study_uid: str) -> list[Path]:
    """The complete files of a study."""
    folder = study_dir(staging, study_uid)
    return [folder / name for name in staged_names(staging, study_uid)]
