"""A C-FIND identifier as a QIDO-RS search (PS3.18 10.6), and its answers as
data sets, so that every find, count and match table reads the same either way.

Keys with a value are matching keys (``key=value``: wildcards, ranges and UID
lists as DIMSE has them, a UID list comma-separated); empty keys are asked back
(``includefield``). The level picks the resource: a series or instance search
names its study (and series) in the path where the identifier gives one UID.
"""

from __future__ import annotations

from typing import NamedTuple

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# Never sent: how the query is framed, not what it matches.
_FRAMING = {"QueryRetrieveLevel", "SpecificCharacterSet"}


def _single_uid(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword, None)
    if value is None or isinstance(value, (list, MultiValue)):
        return None
    text = str(value).strip()
    return text if text and "\\" not in text and "*" not in text and "?" not in text else None


def _text(value: object) -> str:
    if isinstance(value, (list, MultiValue)):
        return ",".join(str(v).strip() for v in value)
    return str(value).strip().replace("\\", ",")


class Search(NamedTuple):
    """A QIDO-RS search: its resource (studies, series, instances) under the
    study (and series) it names, its matching keys and the keys asked back."""

    resource: str
    study: str | None
    series: str | None
    matching: dict[str, str]
    fields: list[str]


def search_of(identifier: Dataset) -> Search:
    """The QIDO-RS search of a C-FIND identifier."""
    level = str(identifier.get("QueryRetrieveLevel", "STUDY")).upper()
    study = _single_uid(identifier, "StudyInstanceUID")
    series = _single_uid(identifier, "SeriesInstanceUID")
    if level == "SERIES":
        resource, series = "series", None
    elif level == "IMAGE":
        resource = "instances"
        series = series if study else None
    else:  # STUDY, and PATIENT (QIDO-RS has no patient resource: studies carry the patient)
        resource, study, series = "studies", None, None
    in_path = {
        key for key, uid in (("StudyInstanceUID", study), ("SeriesInstanceUID", series)) if uid
    }
    matching: dict[str, str] = {}
    fields: list[str] = []
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in _FRAMING or element.VR == "SQ":
            continue
        value = "" if element.value is None else _text(element.value)
        if keyword in in_path or value in ("", "*"):
            fields.append(keyword)  # named in the path, or asked back
        else:
            matching[keyword] = value
    return Search(resource, study, series, matching, fields)


def dataset_of(answer: dict, level: str) -> Dataset:
    """A QIDO-RS answer (DICOM JSON) as the data set a C-FIND match would be."""
    ds = Dataset.from_json(answer)
    ds.QueryRetrieveLevel = level
    return ds
