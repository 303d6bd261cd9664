"""Exports of a find job: one line per match, and one per row that matched
nothing or failed (with the reason), under one header that never changes
within a file (the prototype's CSV columns drifted from row to row)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator

from pydicom.datadict import tag_for_keyword

from pulls.deid.shown import Shown
from pulls.models import FindResult, Job, JobItem

ROW_COLUMNS = ["row", "row_status", "row_matches", "possibly_truncated", "row_error"]
# Always present, in this order, so scripts can rely on them.
KEY_COLUMNS = [
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "StudyInstanceUID",
    "StudyDescription",
    "ModalitiesInStudy",
    "SeriesInstanceUID",
    "Modality",
    "SeriesNumber",
    "SeriesDescription",
    "SOPInstanceUID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "NumberOfSeriesRelatedInstances",
]


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> str:
    """Text that a spreadsheet will not run as a formula (CSV/formula injection)."""
    text = "" if value is None else str(value)
    if text.startswith(_FORMULA_STARTS):
        try:
            float(text)
        except ValueError:
            return "'" + text
    return text


def header_for(job: Job) -> list[str]:
    """Row columns, the key columns, then every other returned keyword by tag."""
    extra: set[str] = set()
    for attributes in FindResult.objects.filter(job=job).values_list("attributes", flat=True):
        extra.update(attributes)
    extra -= set(KEY_COLUMNS)
    return ROW_COLUMNS + KEY_COLUMNS + sorted(extra, key=lambda k: tag_for_keyword(k) or 0)


def export_lines(job: Job, header: list[str], shown: Shown | None = None) -> Iterator[list[str]]:
    """Lines in row order, matches of a row in the order the PACS sent them
    (as ``shown`` shows them: a viewer of a pseudonymised project)."""
    attribute_columns = header[len(ROW_COLUMNS) :]
    matches = (
        FindResult.objects.filter(job=job)
        .order_by("item__row", "id")
        .values_list("item_id", "attributes")
        .iterator(chunk_size=2000)
    )
    pending = next(matches, None)
    items = (
        JobItem.objects.filter(job=job)
        .order_by("row")
        .values_list("pk", "row", "status", "matches", "possibly_truncated", "error_message")
        .iterator(chunk_size=2000)
    )
    for pk, row, status, count, truncated, error in items:
        head = [str(row), status, str(count), "yes" if truncated else "", spreadsheet_safe(error)]
        wrote = False
        while pending is not None and pending[0] == pk:
            attributes = pending[1] if shown is None else shown.attributes(pending[1])
            yield head + [spreadsheet_safe(attributes.get(k, "")) for k in attribute_columns]
            wrote = True
            pending = next(matches, None)
        if not wrote:
            yield head + [""] * len(attribute_columns)


def csv_stream(header: list[str], lines: Iterable[Iterable[object]]) -> Iterator[str]:
    """CSV text in chunks of 1,000 lines for a streaming response, every value
    made spreadsheet-safe."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for n, line in enumerate(lines, 1):
        writer.writerow([spreadsheet_safe(value) for value in line])
        if n % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_chunks(job: Job, shown: Shown | None = None) -> Iterator[str]:
    """The find job's export as CSV text in chunks."""
    header = header_for(job)
    return csv_stream(header, export_lines(job, header, shown))


def xlsx_bytes(job: Job, shown: Shown | None = None) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("matches")
    header = header_for(job)
    sheet.append(header)
    for line in export_lines(job, header, shown):
        sheet.append(line)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def failed_rows(job: Job, shown: Shown | None = None) -> tuple[list[str], list[dict[str, str]]]:
    """The job's rows that failed, or (a find's) matched nothing, as query rows
    to correct and upload again: their keys as they were sent, then two notes
    (``#row``, the row's number in this job, and ``#reason``), which the
    readers skip. Returns (columns, rows) in row order."""
    from django.db.models import Q

    from pulls.models import ItemStatus, JobKind

    wanted = Q(status=ItemStatus.FAILED)
    if job.kind == JobKind.FIND:
        wanted |= Q(status=ItemStatus.DONE, matches=0)
    keys: dict[str, None] = {}
    rows = []
    items = (
        JobItem.objects.filter(job=job)
        .filter(wanted)
        .order_by("row")
        .values_list("row", "identifier", "status", "error_message")
    )
    for row, identifier, status, error in items.iterator(chunk_size=2000):
        if shown is not None:
            identifier = shown.attributes(identifier)
        keys.update(dict.fromkeys(identifier))
        reason = error if status == ItemStatus.FAILED else "matched nothing"
        rows.append({**identifier, "#row": str(row), "#reason": reason})
    # PostgreSQL's JSON keeps no key order: the level first, then the keys in
    # tag order (as the matches' export), whatever the database.
    ordered = sorted(keys, key=lambda k: (k != "QueryRetrieveLevel", tag_for_keyword(k) or 1 << 32))
    return [*ordered, "#row", "#reason"], rows
