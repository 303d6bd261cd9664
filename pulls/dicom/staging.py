"""The staging area: received instances by study, each written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from pulls.dicom.paths import safe_component

TEMP_PREFIX = ".incoming-"


def write_atomically(directory: Path, name: str, chunks: list[bytes]) -> Path:
    """Write to a temp file in the same folder, then rename: readers never see half."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
        final = directory / name
        os.replace(tmp, final)
        return final
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def study_dir(staging: Path, study_uid: str) -> Path:
    return staging / safe_component(study_uid or "unknown-study")


def stage_instance(staging: Path, *, study_uid: str, sop_uid: str, data: list[bytes]) -> Path:
    """``staging/<study>/<sop>.dcm``; both names sanitised (see ``safe_component``)."""
    return write_atomically(study_dir(staging, study_uid), f"{safe_component(sop_uid)}.dcm", data)


def staged_sop_files(staging: Path, study_uid: str) -> list[Path]:
    folder = study_dir(staging, study_uid)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.suffix == ".dcm" and not p.name.startswith(".")]
