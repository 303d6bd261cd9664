"""Pasted lists: a column of values (accession numbers, patient IDs, study UIDs)
with an optional date range and modality for every row, checked as files are."""

from __future__ import annotations

import datetime as dt

from pulls.dicom.identifiers import DEFAULT_QUERY_CHARACTER_SET
from pulls.queries.files import ParsedQueries, check_rows
from pulls.queries.readers import MAX_CELL, Problem, Rows

# What a pasted value may be, and how the form names it.
PASTE_KEYS = {
    "AccessionNumber": "accession numbers",
    "PatientID": "patient IDs",
    "StudyInstanceUID": "study instance UIDs",
}


def _rows(
    text: str,
    *,
    key: str,
    level: str,
    date_from: dt.date | None,
    date_to: dt.date | None,
    modality: str,
) -> Rows:
    start = f"{date_from:%Y%m%d}" if date_from else ""
    end = f"{date_to:%Y%m%d}" if date_to else ""
    dates = start if start == end else f"{start}-{end}"
    modality_key = "Modality" if level in ("SERIES", "IMAGE") else "ModalitiesInStudy"
    for n, line in enumerate(text.splitlines(), 1):
        value = line.strip()
        if not value:
            continue
        if len(value) > MAX_CELL:
            yield n, Problem(n, key, f"is longer than {MAX_CELL} characters: no DICOM value is")
            continue
        row = {"QueryRetrieveLevel": level, key: value}
        if dates:
            row["StudyDate"] = dates
        if modality:
            row[modality_key] = modality.strip().upper()
        yield n, row


def parse_pasted(
    text: str,
    *,
    key: str,
    level: str = "STUDY",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
    modality: str = "",
    max_rows: int = 100_000,
    character_set: str = DEFAULT_QUERY_CHARACTER_SET,
) -> ParsedQueries:
    """One row per non-empty line (its number is the line's), then the same
    checks as a file's rows: the line, the key and the fix for each problem."""
    if key not in PASTE_KEYS:
        raise ValueError(f"key must be one of {', '.join(PASTE_KEYS)}")
    if date_from and date_to and date_from > date_to:
        return ParsedQueries(
            problems=[Problem(None, "StudyDate", "the range starts after it ends: swap the dates")]
        )
    rows = _rows(
        text, key=key, level=level, date_from=date_from, date_to=date_to, modality=modality
    )
    return check_rows(rows, default_level=level, max_rows=max_rows, character_set=character_set)
