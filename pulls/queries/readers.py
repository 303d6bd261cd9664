"""Reading query files — JSON, CSV, XLSX — so that no file can break the portal.

Each reader yields (row number, {keyword: text}) or (row number, Problem) and
raises QueryFileError for what spoils the whole file. Every input is bounded
before it is trusted: the nesting and the numbers of JSON, the field size of
CSV, the unpacked size, members and shared strings of an XLSX (a 1 MB file
that unpacks to 1 GiB is refused from its zip directory, before anything is
unpacked), the columns of every format. Duplicate column headers and JSON
keys are named, never silently merged; a value that is an object, or a list
where DICOM takes one value, is named too.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword


@dataclass
class Problem:
    row: int | None  # None: about the whole file
    key: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" if self.row is not None else "file"
        return f"{where}, {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class QueryFileError(ValueError):
    """The file as a whole cannot be read."""


Rows = Iterator[tuple[int, dict[str, str] | Problem]]

# A column or key whose name starts with it is a note (the reason a row failed,
# in a file of failed rows to correct): read past, never queried.
NOTE = "#"
# No DICOM value needs more (a UID list of a thousand UIDs does not).
MAX_CELL = 65_536
MAX_COLUMNS = 256
# JSON: a list of objects whose values may be lists (of UIDs): 3 levels.
_MAX_DEPTH = 3
_MAX_NUMBER = 64  # characters of a number
# XLSX, from the zip directory: what a sheet of the largest file may unpack to,
# what openpyxl holds in memory whole (the shared strings), how packed a member
# may be (XML packs 5-20 times; a bomb, thousands of times).
XLSX_MAX_UNPACKED = 256 << 20
XLSX_MAX_SHARED_STRINGS = 64 << 20
XLSX_MAX_RATIO = 200
XLSX_MAX_MEMBERS = 1000


def text_of(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise QueryFileError(
            f"the file is not UTF-8 (byte {exc.start + 1}): save it as UTF-8 "
            "(in Excel: Save As, CSV UTF-8)"
        ) from None


def cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "strftime"):  # Excel turned a date cell into a date
        return value.strftime("%Y%m%d")
    return str(value).strip()


def _header(keys: list[str]) -> list[str]:
    """The header's keys, refusing repeats and too many columns."""
    if len(keys) > MAX_COLUMNS:
        raise QueryFileError(
            f"the header has {len(keys)} columns; at most {MAX_COLUMNS}: keep the keys you query"
        )
    seen: dict[str, int] = {}
    for column, key in enumerate(keys, 1):
        if not key:
            continue
        if key in seen:
            raise QueryFileError(
                f"the header names {key} twice (columns {seen[key]} and {column}): keep one of them"
            )
        seen[key] = column
    return keys


# --- JSON ---------------------------------------------------------------------------


def _depth_ok(text: str) -> bool:
    """Whether the JSON nests at most _MAX_DEPTH deep (a linear scan, before the
    parser recurses: 50,000 levels would exhaust its stack)."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > _MAX_DEPTH:
                return False
        elif char in "]}":
            depth -= 1
    return True


class _Repeated(dict):
    """A JSON object that named a key twice (which ``json`` would drop silently)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    found: dict = {}
    for key, value in pairs:
        if key in found:
            return _Repeated(key)
        found[key] = value
    return found


def _number(text: str) -> str:
    if len(text) > _MAX_NUMBER:
        raise QueryFileError(
            f"a number of {len(text)} characters: no DICOM value is that long; "
            "write it as text if it is an identifier"
        )
    return text


def _constant(name: str) -> str:
    raise QueryFileError(f"{name} is not a value a query can hold")


def _takes_several(key: str) -> bool:
    """Whether DICOM matches a list of values for ``key``: UID lists (PS3.4 C.2.2.2.2)."""
    return tag_for_keyword(key) is not None and dictionary_VR(key) == "UI"


def _value(n: int, key: str, value: object) -> str | Problem:
    if isinstance(value, dict):
        return Problem(n, key, "is an object: give a text or a number")
    if isinstance(value, list):
        if not _takes_several(key) or any(isinstance(v, dict | list) for v in value):
            return Problem(
                n, key, "is a list: DICOM matches several values only for UIDs; give one value"
            )
        return "\\".join(cell(v) for v in value)
    text = cell(value)
    if len(text) > MAX_CELL:
        return Problem(n, key, f"is {len(text)} characters long; no DICOM value is")
    return text


def json_rows(data: bytes) -> Rows:
    text = text_of(data)
    if not _depth_ok(text):
        raise QueryFileError(
            'a JSON query file is a list of flat objects: [{"PatientID": "123"}, ...]; '
            f"this one nests deeper than {_MAX_DEPTH} levels"
        )
    try:
        items = json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_number,
            parse_float=_number,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise QueryFileError(
            f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    if not isinstance(items, list):
        raise QueryFileError(
            'a JSON query file is a list of objects: [{"QueryRetrieveLevel": "STUDY", ...}]'
        )
    for n, item in enumerate(items, 1):
        if isinstance(item, _Repeated):
            yield n, Problem(n, item.key, "appears twice in this object: keep one")
            continue
        if not isinstance(item, dict):
            yield n, Problem(n, "", 'each entry must be an object such as {"PatientID": "123"}')
            continue
        if len(item) > MAX_COLUMNS:
            yield n, Problem(n, "", f"has {len(item)} keys; at most {MAX_COLUMNS}")
            continue
        row: dict[str, str] = {}
        problem = None
        for key, value in item.items():
            if str(key).strip().startswith(NOTE):
                continue
            got = _value(n, str(key).strip(), value)
            if isinstance(got, Problem):
                problem = problem or got
            else:
                row[str(key).strip()] = got
        yield n, problem or row


# --- CSV ------------------------------------------------------------------------------


def csv_rows(data: bytes) -> Rows:
    text = text_of(data)
    if "\x00" in text:
        raise QueryFileError("the file holds NUL characters: it is not a CSV text file")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    previous = csv.field_size_limit(MAX_CELL)
    try:
        reader = csv.reader(io.StringIO(text), dialect)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise QueryFileError(f"the header row cannot be read: {exc}") from None
        if not header or not any(h.strip() for h in header):
            raise QueryFileError("the CSV file has no header row with DICOM keywords")
        keys = _header([h.strip() for h in header])
        n = 0
        while True:
            try:
                values = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                line = reader.line_num
                raise QueryFileError(
                    f"line {line} cannot be read ({exc}): a value is longer than "
                    f"{MAX_CELL} characters, or a quote is not closed"
                ) from None
            n += 1
            if not any(v.strip() for v in values):
                continue
            if len(values) > len(keys):
                problem = f"has {len(values)} values but the header has {len(keys)} keys"
                yield n, Problem(n, "", problem)
                continue
            yield n, {k: v.strip() for k, v in zip(keys, values, strict=False) if k}
    finally:
        csv.field_size_limit(previous)


# --- XLSX -----------------------------------------------------------------------------


def _xlsx_unpacks_sanely(data: bytes) -> None:
    """Refuse a zip bomb from the zip directory alone: nothing is unpacked."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError):
        raise QueryFileError("cannot read this XLSX file: save it again from Excel") from None
    members = archive.infolist()
    if len(members) > XLSX_MAX_MEMBERS:
        raise QueryFileError(f"this XLSX file holds {len(members)} parts: it is no spreadsheet")
    unpacked = sum(member.file_size for member in members)
    for member in members:
        if member.filename.endswith("sharedStrings.xml") and (
            member.file_size > XLSX_MAX_SHARED_STRINGS
        ):
            raise QueryFileError(
                f"this XLSX file's text takes {member.file_size >> 20} MB unpacked; "
                f"at most {XLSX_MAX_SHARED_STRINGS >> 20} MB: split it into several files"
            )
    for member in members:
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > 1 << 20 and ratio > XLSX_MAX_RATIO:
            raise QueryFileError(
                f"this XLSX file unpacks to {unpacked >> 20} MB ({member.filename} is packed "
                f"{ratio:.0f} times): it is not a query list; save the list again from Excel"
            )
    if unpacked > XLSX_MAX_UNPACKED:
        raise QueryFileError(
            f"this XLSX file unpacks to {unpacked >> 20} MB; at most {XLSX_MAX_UNPACKED >> 20} "
            "MB: split it into several files"
        )


def xlsx_rows(data: bytes) -> Rows:
    from openpyxl import load_workbook

    _xlsx_unpacks_sanely(data)
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # noqa: BLE001  (openpyxl raises many kinds on a broken file)
        raise QueryFileError("cannot read this XLSX file: save it again from Excel") from None
    try:
        sheet = book.worksheets[0]
        rows = sheet.iter_rows(values_only=True, max_col=MAX_COLUMNS + 1)
        header = next(rows, None)
        if not header or not any(cell(h) for h in header):
            raise QueryFileError("the first sheet has no header row with DICOM keywords")
        keys = [cell(h) for h in header]
        while keys and not keys[-1]:  # openpyxl pads a row to max_col
            keys.pop()
        keys = _header(keys)
        for n, values in enumerate(rows, 1):
            cells = [cell(v) for v in values]
            if not any(cells):
                continue
            pairs = zip(keys, cells, strict=False)
            long = next((k for k, v in pairs if len(v) > MAX_CELL), None)
            if long is not None:
                yield (
                    n,
                    Problem(n, long, f"is longer than {MAX_CELL} characters; no DICOM value is"),
                )
                continue
            yield n, {k: v for k, v in zip(keys, cells, strict=False) if k}
    except QueryFileError:
        raise
    except Exception:  # noqa: BLE001  (a sheet broken further down)
        raise QueryFileError("cannot read this XLSX file: save it again from Excel") from None
    finally:
        book.close()


READERS = {"json": json_rows, "csv": csv_rows, "xlsx": xlsx_rows}
