"""Example query files to start from (CSV, XLSX, JSON), and the rows of a job
written back as a query file in the format it came in (the failed-rows round
trip): columns whose name starts with "#" are notes, which the readers skip."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

FORMATS = {
    "csv": "text/csv",
    "json": "application/json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

_EXAMPLE_KEYS = [
    "QueryRetrieveLevel", "PatientID", "AccessionNumber", "StudyDate", "ModalitiesInStudy",
    "StudyDescription", "StudyInstanceUID",
]  # fmt: skip
_EXAMPLE_ROWS = [
    {"QueryRetrieveLevel": "STUDY", "PatientID": "PNP0700001", "StudyDate": "20190101-20211231",
     "ModalitiesInStudy": "CT"},
    {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "A07000010000"},
    {"QueryRetrieveLevel": "STUDY", "PatientID": "PNP0700002", "StudyDescription": "*THORAX*"},
]  # fmt: skip


def format_of(source_name: str) -> str:
    """The format a job's rows came in (a pasted list, or no file: CSV)."""
    suffix = source_name.rsplit(".", 1)[-1].lower() if "." in source_name else ""
    return suffix if suffix in FORMATS else "csv"


def query_file(rows: Sequence[dict[str, str]], keys: Sequence[str], fmt: str) -> bytes:
    """``rows`` as a query file of ``fmt`` with the columns ``keys`` (in order)."""
    if fmt == "json":
        return json.dumps(
            [{k: row.get(k, "") for k in keys if k in row} for row in rows],
            ensure_ascii=False,
            indent=1,
        ).encode("utf-8")
    if fmt == "xlsx":
        from openpyxl import Workbook

        from pulls.jobs.exports import spreadsheet_safe

        book = Workbook(write_only=True)
        sheet = book.create_sheet("queries")
        sheet.append(list(keys))
        for row in rows:
            sheet.append([spreadsheet_safe(row.get(k, "")) for k in keys])
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    for row in rows:
        writer.writerow([row.get(k, "") for k in keys])
    return buffer.getvalue().encode("utf-8")


def example_file(fmt: str) -> bytes:
    return query_file(_EXAMPLE_ROWS, _EXAMPLE_KEYS, fmt)
