"""Query identifiers from rows of keyword -> value, and matches back to plain dicts."""

from __future__ import annotations

from collections.abc import Mapping

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


class IdentifierError(ValueError):
    """A query row cannot become a DICOM identifier; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


def identifier_from_row(row: Mapping[str, str]) -> Dataset:
    """Build a C-FIND/C-MOVE identifier; empty values and ``*`` become return keys."""
    level = str(row.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS:
        raise IdentifierError(
            "QueryRetrieveLevel", f"must be one of {', '.join(LEVELS)}, not {level!r}"
        )
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, raw in row.items():
        if key == "QueryRetrieveLevel":
            continue
        if tag_for_keyword(key) is None:
            raise IdentifierError(key, "is not a DICOM keyword (check spelling and case)")
        if dictionary_VR(key) == "SQ":
            raise IdentifierError(key, "sequence attributes cannot be used as query keys")
        value = "" if raw is None else str(raw).strip()
        setattr(ds, key, "" if value == "*" else value)
    return ds


def match_to_dict(ds: Dataset) -> dict[str, str]:
    """A match as keyword -> text, skipping sequences and private tags."""
    out: dict[str, str] = {}
    for elem in ds:
        if not elem.keyword or elem.VR == "SQ" or elem.keyword == "QueryRetrieveLevel":
            continue
        value = elem.value
        if value is None:
            out[elem.keyword] = ""
        elif elem.VM > 1:
            out[elem.keyword] = "\\".join(str(v) for v in value)
        else:
            out[elem.keyword] = str(value)
    return out
