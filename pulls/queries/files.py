"""Query files: the seed's JSON list, CSV and XLSX with DICOM keywords as headers.

The whole file is read and checked before anything is saved or sent. Every
problem is reported with its row (1 = the first query row), its key and the
fix; a file with any problem gives no rows at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pulls.dicom.identifiers import DEFAULT_QUERY_CHARACTER_SET, LEVELS, row_errors
from pulls.queries.readers import NOTE, READERS, Problem, QueryFileError

FORMATS = ("json", "csv", "xlsx")
# Patient-level queries need one of these with an exact value: a bare or wildcard
# patient query asks the PACS for its whole patient list.
_PATIENT_EXACT_KEYS = ("PatientID", "OtherPatientIDs", "IssuerOfPatientID")
_WILDCARDS = ("*", "?")
_MAX_ERRORS = 200


@dataclass
class ParsedQueries:
    rows: list[dict[str, str]] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)  # each row's number in the file
    problems: list[Problem] = field(default_factory=list)
    truncated: bool = False  # more problems than listed
    # Rows that repeated an earlier one, merged into it: (its number, the earlier's).
    merged: list[tuple[int, int]] = field(default_factory=list)

    def merged_text(self) -> str:
        """The merged rows in words, for the preview ("" when none were)."""
        if not self.merged:
            return ""
        shown = ", ".join(f"row {n} (as row {first})" for n, first in self.merged[:20])
        more = f" and {len(self.merged) - 20} more" if len(self.merged) > 20 else ""
        return f"{len(self.merged)} repeated row(s) merged into the first: {shown}{more}"

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
    too); fill the default QueryRetrieveLevel; merge a row that repeats an
    earlier one into it (the same keys and values, return keys aside).

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
        row = {k: v for k, v in row.items() if k and not k.startswith(NOTE)}
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
            result.merged.append((n, seen[signature]))
            continue
        seen[signature] = n
        result.rows.append(row)
        result.numbers.append(n)
    if not result.rows and not result.problems:
        report(Problem(None, "", "contains no query rows"))
    if result.problems:
        result.rows, result.numbers, result.merged = [], [], []
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
            READERS[fmt](data),
            default_level=default_level,
            max_rows=max_rows,
            character_set=character_set,
        )
    except QueryFileError as exc:
        return ParsedQueries(problems=[Problem(None, "", str(exc))])
