"""Query files: the seed's JSON list, CSV and XLSX with DICOM keywords as headers.

The whole file is read and checked before anything is saved or sent. Every
problem is reported with its row (1 = the first query row), its key and the
fix; a file with any problem gives no rows at all.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pulls.dicom.identifiers import DEFAULT_QUERY_CHARACTER_SET, LEVELS, row_errors

FORMATS = ("json", "csv", "xlsx")
# Patient-level queries need one of these with an exact value: a bare or wildcard
# patient query asks the PACS for its whole patient list.
_PATIENT_EXACT_KEYS = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID")
_WILDCARDS = ("*", "?")
_MAX_ERRORS = 200


@dataclass
class Problem:
    row: int | None  # None: about the whole file
    key: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        return f"{where}, {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


@dataclass
class ParsedQueries:
    rows: list[dict[str, str]] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # each row's number in the file
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False  # more problems than listed

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def keys(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self.rows:
            seen.update(dict.fromkeys(row))
        return list(seen)


def human_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1_000_000 else f"{max(1, round(n / 1000))} KB"


class QueryFileError(ValueError):
    """The file as a whole cannot be read."""


def detect_format(name: str, head: bytes) -> str:
    lowered = name.lower()
    for fmt in FORMATS:
        if lowered.endswith("." + fmt):
            return fmt
    if head.startswith(b"PK\x03\x04"):
        return "xlsx"
    if head.lstrip()[:1] == b"[":
        return "json"
    raise QueryFileError(f"cannot tell the format of {name!r}: use a .json, .csv or .xlsx file")


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QueryFileError(
            f"the file is not UTF-8 (byte {exc.start + 1}): save it as UTF-8 "
            "(in Excel: Save As, CSV UTF-8)"
        ) from None


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "strftime"):  # Excel turned a date cell into a date
        return value.strftime("%Y%m%d")
    return str(value).strip()


Rows = Iterator[tuple[int, dict[str, str] | Problem]]


def _json_rows(data: bytes) -> Rows:
    try:
        items = json.loads(_text(data))
    except json.JSONDecodeError as exc:
        raise QueryFileError(
            f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(items, list):
        raise QueryFileError(
            'a JSON query file is a list of objects: [{"QueryRetrieveLevel": "STUDY", ...}]'
        )
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            yield n, Problem(n, "", 'each entry must be an object such as {"PatientID": "123"}')
            continue
        yield n, {str(k).strip(): _cell(v) for k, v in item.items()}


def _csv_rows(data: bytes) -> Rows:
    text = _text(data)
    sample = text[:4096]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text), dialect)
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise QueryFileError("the CSV file has no header row with DICOM keywords")
    keys = [h.strip() for h in header]
    for n, values in enumerate(reader, 1):
        if not any(v.strip() for v in values):
            continue
        if len(values) > len(keys):
            problem = f"has {len(values)} values but the header has {len(keys)} keys"
            yield n, Problem(n, "", problem)
            continue
        yield n, {k: v.strip() for k, v in zip(keys, values, strict=False) if k}


def _xlsx_rows(data: bytes) -> Rows:
    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # noqa: BLE001  (openpyxl raises many kinds on a broken file)
        raise QueryFileError("cannot read this XLSX file: save it again from Excel") from None
    sheet = book.worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = next(rows, None)
    if not header or not any(_cell(h) for h in header):
        raise QueryFileError("the first sheet has no header row with DICOM keywords")
    keys = [_cell(h) for h in header]
    for n, values in enumerate(rows, 1):
        cells = [_cell(v) for v in values]
        if not any(cells):
            continue
        yield n, {k: v for k, v in zip(keys, cells, strict=False) if k}
    book.close()


_READERS = {"json": _json_rows, "csv": _csv_rows, "xlsx": _xlsx_rows}


def _patient_problem(row: dict[str, str]) -> str | None:
    """Refuse patient-level queries that would list the PACS's patients."""
    if row.get("QueryRetrieveLevel") != "PATIENT":
        return None
    for key in _PATIENT_EXACT_KEYS:
        value = row.get(key, "")
        if value and not any(w in value for w in _WILDCARDS):
            return None
    return (
        "a PATIENT-level query needs an exact PatientID (no * or ?), to protect the PACS "
        "from listing all its patients"
    )


def check_rows(
    rows: Iterable[tuple[int, dict[str, str] | Problem]],
    *,
    default_level: str,
    max_rows: int,
    character_set: str = DEFAULT_QUERY_CHARACTER_SET,
) -> ParsedQueries:
    """Validate every row (values the node's ``character_set`` cannot carry
    too); fill the default QueryRetrieveLevel; report duplicates.

    Row numbers count from the first row under the header (or the first JSON
    object); blank lines keep their number so it matches the file."""
    result = ParsedQueries()
    count = 0
    seen: dict[tuple, int] = {}

    def report(problem: Problem) -> None:
        if len(result.problems) < _MAX_ERRORS:
            result.problems.append(problem)
        else:
            result.truncated = True

    for n, row in rows:
        if isinstance(row, Problem):
            report(row)
            continue
        count += 1
        if count > max_rows:
            report(Problem(None, "", f"has more than {max_rows} rows: split it into several files"))
            break
        row = {k: v for k, v in row.items() if k}
        level = row.get("QueryRetrieveLevel", "").strip().upper() or default_level
        if level:
            row["QueryRetrieveLevel"] = level
        for error in row_errors(row, character_set=character_set):
            report(Problem(n, error.key, error.reason))
        patient = _patient_problem(row)
        if patient:
            report(Problem(n, "PatientID", patient))
        signature = tuple(sorted((k, v) for k, v in row.items() if v not in ("", "*")))
        if signature in seen:
            report(Problem(n, "", f"repeats row {seen[signature]}: remove one of them"))
        else:
            seen[signature] = n
        result.rows.append(row)
        result.numbers.append(n)
    if not result.rows and not result.problems:
        report(Problem(None, "", "contains no query rows"))
    if result.problems:
        result.rows, result.numbers = [], []
    return result


def parse_query_file(
    data: bytes,
    *,
    name: str,
    default_level: str = "",
    max_rows: int = 100_000,
    max_bytes: int = 20 << 20,
    character_set: str = DEFAULT_QUERY_CHARACTER_SET,
) -> ParsedQueries:
    """Read and check a whole query file; never raises for bad content."""
    if default_level and default_level not in LEVELS:
        raise ValueError(f"default_level must be one of {LEVELS}")
    if not data.strip():
        return ParsedQueries(problems=[Problem(None, "", "is empty")])
    if len(data) > max_bytes:
        return ParsedQueries(
            problems=[
                Problem(
                    None,
                    "",
                    f"is {human_size(len(data))}; the limit is {human_size(max_bytes)}: "
                    "split it into several files",
                )
            ]
        )
    try:
        fmt = detect_format(name, data[:64])
        return check_rows(
            _READERS[fmt](data),
            default_level=default_level,
            max_rows=max_rows,
            character_set=character_set,
        )
    except QueryFileError as exc:
        return ParsedQueries(problems=[Problem(None, "", str(exc))])
