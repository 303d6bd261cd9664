"""Query identifiers from rows of keyword -> value, and matches back to plain dicts.

Values are checked by VR before anything is sent (PS3.4 C.2.2.2, PS3.5 6.2):
dates, times and date-times and their ranges, UIDs and UID lists, wildcards
only where DICOM allows them; empty values and ``*`` become return keys.
Every error names the key and says how to fix it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping

from pydicom import config
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")

# Wildcard matching (* and ?) is defined only for these VRs (PS3.4 C.2.2.2.4).
_WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_MAX_LENGTH = {"AE": 16, "AS": 4, "CS": 16, "DS": 16, "IS": 12, "LO": 64, "SH": 16, "UI": 64}
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_CS = re.compile(r"^[A-Z0-9 _*?]*$")
_TM = re.compile(r"^([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?)?$")
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")
_AS = re.compile(r"^\d{3}[DWMY]$")
_IS = re.compile(r"^\s*[+-]?\d+\s*$")
_DS = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")


# The character sets a node may take query values in (PS3.3 C.12.1.1.2: single
# byte sets without code extensions, UTF-8, GB18030). Values in plain ASCII
# are sent without a SpecificCharacterSet, as every PACS reads them.
QUERY_CHARACTER_SETS = {
    "ISO_IR 192": "Unicode in UTF-8",
    "ISO_IR 100": "Latin alphabet No. 1 (Western Europe)",
    "ISO_IR 101": "Latin alphabet No. 2 (Central Europe)",
    "ISO_IR 109": "Latin alphabet No. 3",
    "ISO_IR 110": "Latin alphabet No. 4",
    "ISO_IR 148": "Latin alphabet No. 5 (Turkish)",
    "ISO_IR 144": "Cyrillic",
    "ISO_IR 127": "Arabic",
    "ISO_IR 126": "Greek",
    "ISO_IR 138": "Hebrew",
    "ISO_IR 166": "Thai",
    "GB18030": "Chinese (GB18030)",
    "": "ASCII only (the PACS reads no other character set)",
}
DEFAULT_QUERY_CHARACTER_SET = "ISO_IR 192"


def _codec(character_set: str) -> str:
    return python_encoding.get(character_set, "ascii") if character_set else "ascii"


def unsendable(value: str, character_set: str) -> str | None:
    """Why ``value`` cannot be sent in ``character_set`` (None: it can)."""
    if value.isascii():
        return None
    try:
        value.encode(_codec(character_set))
    except UnicodeEncodeError as exc:
        bad = value[exc.start : exc.end]
        name = QUERY_CHARACTER_SETS.get(character_set, character_set)
        return (
            f"contains {bad!r}, which this node's character set ({character_set or 'ASCII'}: "
            f"{name}) cannot carry: write the value without it, or ask an operator to set "
            "the node's character set to ISO_IR 192 (UTF-8) if the PACS reads it"
        )
    return None


class IdentifierError(ValueError):
    """A query row cannot become a DICOM identifier; the message names the key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.reason = message


def _check_date(value: str) -> str | None:
    try:
        dt.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        return f"{value!r} is not a date: write YYYYMMDD, such as 20240131"
    return None


def _check_time(value: str) -> str | None:
    if not _TM.match(value):
        return f"{value!r} is not a time: write HHMMSS (or HH, HHMM), such as 0730 or 143000"
    return None


def _check_datetime(value: str) -> str | None:
    m = _DT.match(value)
    if not m:
        return f"{value!r} is not a date-time: write YYYYMMDDHHMMSS, such as 20240131143000"
    year, month, day = m.group(1), m.group(2) or "01", m.group(3) or "01"
    problem = _check_date(year + month + day)
    return f"{value!r} is not a date-time: {problem}" if problem else None


_RANGE_CHECKS = {"DA": _check_date, "TM": _check_time, "DT": _check_datetime}


def _check_range(vr: str, value: str) -> str | None:
    """A single value or a range START-END (either side may be open)."""
    check = _RANGE_CHECKS[vr]
    if "-" not in value or (vr == "DT" and check(value) is None):
        return check(value)  # a DT may end in a UTC offset such as -0500
    if vr == "DA" and re.match(r"^\d{4}-\d{2}-\d{2}$", value):
        dicom = value.replace("-", "")
        if problem := check(dicom):
            return f"{value!r} is written like an ISO date, and {problem}"
        return f"{value!r} looks like an ISO date: DICOM writes it {dicom}"
    if value.count("-") > 1:
        return f"{value!r} has more than one '-': a range is START-END"
    start, end = value.split("-")
    if not start and not end:
        return "a range needs a start, an end or both, such as 20200101-20201231"
    for part in (start, end):
        if part and (problem := check(part)):
            return problem
    if start and end and start > end:
        return f"the range starts after it ends ({start} > {end}): swap the two"
    return None


def check_value(keyword: str, vr: str, value: str) -> str | None:
    """Return why ``value`` is not a valid matching key for ``keyword``, or None."""
    has_wildcard = "*" in value or "?" in value
    if has_wildcard and vr not in _WILDCARD_VRS:
        return f"wildcards (* or ?) are not allowed for {vr} attributes: give an exact value" + (
            " or a range" if vr in _RANGE_CHECKS else ""
        )
    if vr in _RANGE_CHECKS:
        return _check_range(vr, value)
    if vr == "UI":
        for uid in value.split("\\"):
            if len(uid) > 64 or not _UID.match(uid):
                return (
                    f"{uid!r} is not a UID: digits and dots, at most 64 characters, "
                    "no leading zeros in a component"
                )
        return None
    if "\\" in value:
        return "lists of values (with backslash) are only allowed for UIDs"
    limit = _MAX_LENGTH.get(vr)
    if limit and len(value) > limit:
        return f"is {len(value)} characters long; {vr} values have at most {limit}"
    if vr == "CS" and not _CS.match(value):
        upper = value.upper()
        if _CS.match(upper):
            return f"code strings are upper case: write {upper!r}"
        return "code strings have only A-Z, 0-9, space and underscore"
    if vr == "AS" and not _AS.match(value):
        return f"{value!r} is not an age: write nnnD, nnnW, nnnM or nnnY, such as 045Y"
    if vr == "IS" and not _IS.match(value):
        return f"{value!r} is not a whole number"
    if vr == "DS" and not _DS.match(value):
        return f"{value!r} is not a decimal number"
    if vr == "PN" and len(value.split("=")[0]) > 64:
        return "person names have at most 64 characters per component group"
    if any(ord(c) < 32 for c in value):
        return "contains control characters"
    return None


# A query file's column that is no DICOM key and is never sent: the pseudonym a
# pseudonymised project gives the row's patient (pulls.deid.pseudonyms).
PSEUDONYM = "Pseudonym"
_PSEUDONYM_CHARACTERS = frozenset(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
)


def pseudonym_problem(value: str) -> str | None:
    """What is wrong with a pseudonym (it names a folder and a PatientID)."""
    if not 1 <= len(value) <= 64 or not set(value) <= _PSEUDONYM_CHARACTERS or value[0] in "._-":
        return (
            "must be 1 to 64 letters, digits, dots, dashes or underscores, starting with a "
            "letter or digit (it becomes the PatientID and a folder name)"
        )
    return None


def row_errors(
    row: Mapping[str, object], *, character_set: str = DEFAULT_QUERY_CHARACTER_SET
) -> list[IdentifierError]:
    """Every problem of a query row, each naming its key; values that cannot be
    sent in the node's ``character_set`` among them."""
    errors: list[IdentifierError] = []
    level = str(row.get("QueryRetrieveLevel", "") or "").strip().upper()
    if not level:
        errors.append(
            IdentifierError(
                "QueryRetrieveLevel",
                f"is missing: add it with one of {', '.join(LEVELS)}",
            )
        )
    elif level not in LEVELS:
        errors.append(
            IdentifierError(
                "QueryRetrieveLevel", f"must be one of {', '.join(LEVELS)}, not {level!r}"
            )
        )
    for key, raw in row.items():
        if key == "QueryRetrieveLevel":
            continue
        if key == PSEUDONYM:
            value = "" if raw is None else str(raw).strip()
            problem = pseudonym_problem(value) if value else None
            if problem:
                errors.append(IdentifierError(key, problem))
            continue
        if not isinstance(key, str) or tag_for_keyword(key) is None:
            errors.append(
                IdentifierError(str(key), "is not a DICOM keyword (check spelling and case)")
            )
            continue
        vr = dictionary_VR(key)
        if vr == "SQ":
            errors.append(IdentifierError(key, "sequences cannot be used as query keys"))
            continue
        value = "" if raw is None else str(raw).strip()
        if value in ("", "*"):
            continue
        problem = check_value(key, vr, value) or unsendable(value, character_set)
        if problem:
            errors.append(IdentifierError(key, problem))
    return errors


def identifier_from_row(
    row: Mapping[str, object], *, character_set: str = DEFAULT_QUERY_CHARACTER_SET
) -> Dataset:
    """Build a C-FIND/C-MOVE/C-GET identifier; raises the first error of the row.
    A value beyond ASCII goes with a SpecificCharacterSet: the node's
    ``character_set`` (PS3.4 C.2.2.2.1.5: the PACS matches in it)."""
    errors = row_errors(row, character_set=character_set)
    if errors:
        raise errors[0]
    ds = Dataset()
    values = {}
    for key, raw in row.items():
        if key != "QueryRetrieveLevel" and key != PSEUDONYM:
            value = "" if raw is None else str(raw).strip()
            values[key] = "" if value == "*" else value
    if character_set and not all(value.isascii() for value in values.values()):
        ds.SpecificCharacterSet = character_set
    ds.QueryRetrieveLevel = str(row["QueryRetrieveLevel"]).strip().upper()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def retrieve_identifier(row: Mapping[str, object], *, model: str) -> Dataset:
    """The identifier of a row's C-MOVE or C-GET: its unique keys only (PS3.4
    C.4.2.2.1): StudyInstanceUID, and SeriesInstanceUID for a row that names a
    series (as the rest of the retrieval reads it: at SERIES level), with
    PatientID in the patient root model. Whatever else the row's file named
    (a seed query's ``"PatientName": "*"``, a date) stays out: a PACS may refuse
    a retrieval with other keys, or match on them (DCMTK's dcmqrscp, sent a date
    that the study does not have, reports success and sends nothing)."""
    keys = ["StudyInstanceUID"]
    level = "STUDY"
    if str(row.get("SeriesInstanceUID", "") or "").strip():
        keys.append("SeriesInstanceUID")
        level = "SERIES"
    if model == "P":
        keys.insert(0, "PatientID")
    asked = {"QueryRetrieveLevel": level, **{key: row.get(key, "") for key in keys}}
    return _uids_identifier(asked) or identifier_from_row(asked)


# The elements of a retrieval's identifier made by _uids_identifier.
_RETRIEVE_TAGS = {
    "QueryRetrieveLevel": (0x00080052, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
}


def _uids_identifier(asked: Mapping[str, object]) -> Dataset | None:
    """The identifier of a retrieval that names UIDs alone (a level and UIDs
    that are valid: checked here as ``check_value`` does), made without
    pydicom's checks of each value and its keyword lookups (18 µs instead
    of 28 alone; ~90 µs traced in a busy worker, of ~0.44 ms a one-instance
    C-GET's row takes on the association). None for anything else."""
    ds = Dataset()
    for key, value in asked.items():
        known = _RETRIEVE_TAGS.get(key)
        if known is None or type(value) is not str:
            return None
        tag, vr = known
        if vr == "UI" and (len(value) > 64 or not _UID.fullmatch(value)):
            return None
        ds[tag] = DataElement(tag, vr, value, validation_mode=config.IGNORE)
    return ds


# Asked back from every C-FIND at each level (empty = "return it"), whatever
# the file asked: the keys people read in the match table and the exports, the
# ones the filters use, and what a retrieval needs (unique keys; instance
# counts, so a retrieval made from the find skips a C-FIND per study; the SOP
# classes, which its C-GET offers). A PACS without one leaves it out; a node
# may leave out those its PACS is slow on (PacsNode.return_keys_omitted).
RETURN_KEYS = {
    "PATIENT": (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "NumberOfPatientRelatedStudies",
    ),
    "STUDY": (
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
        "AccessionNumber", "StudyDescription", "ModalitiesInStudy", "StudyID",
        "ReferringPhysicianName", "StudyInstanceUID", "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances", "SOPClassesInStudy",
    ),
    "SERIES": (
        "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
        "SeriesDescription", "BodyPartExamined", "SeriesDate", "NumberOfSeriesRelatedInstances",
    ),
    "IMAGE": (
        "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
        "InstanceNumber",
    ),
}  # fmt: skip
# What a retrieval needs back: never left out, whatever the node says.
UNIQUE_KEYS = {
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances", "SOPClassesInStudy",
}  # fmt: skip


def find_row(row: Mapping[str, object], *, omitted: Iterable[str] = ()) -> dict[str, object]:
    """A query row with its level's standard return keys added where it does not
    name them (but those in ``omitted``, other than what a retrieval needs)."""
    level = str(row.get("QueryRetrieveLevel", "")).strip().upper()
    leave_out = set(omitted) - UNIQUE_KEYS
    out = dict(row)
    for key in RETURN_KEYS.get(level, ()):
        if key not in leave_out:
            out.setdefault(key, "")
    return out


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
