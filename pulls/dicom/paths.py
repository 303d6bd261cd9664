"""File names from tag values: an attack surface, so only safe UIDs pass as they are."""

from __future__ import annotations

import functools
import hashlib
import re

_UID_CHARACTERS = "0123456789."


def safe_component(value: str) -> str:
    """A UID that matches ``^[0-9.]{1,64}$`` in full (and is not only dots) is
    used as is; anything else becomes a fixed-length hash, so ``../``, ``/`` or
    a line break never reach a path. (No regex: ``$`` would let a trailing line
    break through, and this runs twice for every instance received.)"""
    if 0 < len(value) <= 64 and not value.strip(_UID_CHARACTERS) and value.strip("."):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"x{digest}"


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def safe_name(value: str) -> str:
    """A folder name from a free-text tag value such as PatientID."""
    if _SAFE_NAME.fullmatch(value) and value not in (".", ".."):
        return value
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"x{digest}"


@functools.lru_cache(maxsize=1024)
def _series_folder(patient_id: str, study_uid: str, series_uid: str) -> str:
    # The same for every instance of a series, which arrive together.
    return (
        f"{safe_name(patient_id or 'unknown-patient')}"
        f"/{safe_component(study_uid or 'unknown-study')}"
        f"/{safe_component(series_uid or 'unknown-series')}"
    )


def layout_relpath(keys: dict[str, str], *, fallback_sop: str = "") -> str:
    """``{PatientID}/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``, sanitised
    (a string: it is built for every instance received)."""
    folder = _series_folder(
        keys.get("PatientID") or "",
        keys.get("StudyInstanceUID") or "",
        keys.get("SeriesInstanceUID") or "",
    )
    return f"{folder}/{safe_component(keys.get('SOPInstanceUID') or fallback_sop)}.dcm"
