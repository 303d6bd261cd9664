"""How many instances the PACS holds for a study or a series (the expected count).

Study level: NumberOfStudyRelatedInstances when the PACS fills it (Orthanc
does). Otherwise series by series: NumberOfSeriesRelatedInstances, or an
IMAGE-level C-FIND that names the series (dcmqrscp leaves the counts empty and
returns nothing at IMAGE level without a SeriesInstanceUID).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import NamedTuple

from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset

from pulls.dicom.client import Session
from pulls.dicom.errors import PacsStatusError
from pulls.dicom.headers import scan_tags


def _query(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def _count(value: object) -> int | None:
    try:
        return int(str(value).strip()) if str(value).strip() else None
    except ValueError:
        return None


def _series_count(
    session: Session, *, model: str, study_uid: str, series_uid: str, patient: dict
) -> int:
    query = _query(
        "SERIES",
        **patient,
        StudyInstanceUID=study_uid,
        SeriesInstanceUID=series_uid,
        NumberOfSeriesRelatedInstances="",
    )
    for match in session.find(query, model=model):
        count = _count(match.get("NumberOfSeriesRelatedInstances", ""))
        if count is not None:
            return count
    images = _query(
        "IMAGE",
        **patient,
        StudyInstanceUID=study_uid,
        SeriesInstanceUID=series_uid,
        SOPInstanceUID="",
    )
    return sum(1 for _ in session.find(images, model=model))


class StudyCount(NamedTuple):
    """What the PACS says a study holds: instances, and of which SOP classes
    (SOPClassesInStudy; None when it does not say)."""

    instances: int
    sop_classes: tuple[str, ...] | None


def _classes(value: str) -> tuple[str, ...] | None:
    classes = tuple(uid for part in value.split("\\") if (uid := part.strip("\x00 ")))
    return classes or None


def count_instances(
    session: Session,
    *,
    study_uid: str,
    series_uid: str | None = None,
    patient_id: str | None = None,
    model: str = "S",
) -> int:
    """Instances of the study (or of one series of it) according to the PACS."""
    return count_one(
        session, study_uid=study_uid, series_uid=series_uid, patient_id=patient_id, model=model
    ).instances


def count_one(
    session: Session,
    *,
    study_uid: str,
    series_uid: str | None = None,
    patient_id: str | None = None,
    model: str = "S",
    classes: bool = False,
) -> StudyCount:
    """Instances of the study (or of one series of it) according to the PACS, and
    with ``classes`` the SOP classes it names for the study in the same C-FIND
    (SOPClassesInStudy: what a C-GET proposes; None when it does not say)."""
    patient = {"PatientID": patient_id} if model == "P" and patient_id else {}
    if series_uid:
        count = _series_count(
            session, model=model, study_uid=study_uid, series_uid=series_uid, patient=patient
        )
        return StudyCount(count, None)
    keys = {"NumberOfStudyRelatedInstances": "", **({"SOPClassesInStudy": ""} if classes else {})}
    study = _query("STUDY", **patient, StudyInstanceUID=study_uid, **keys)
    for match in session.find(study, model=model):
        count = _count(match.get("NumberOfStudyRelatedInstances", ""))
        if count is not None:
            named = match.get("SOPClassesInStudy", None)
            if named is not None and not isinstance(named, str):
                named = "\\".join(str(uid) for uid in named)
            return StudyCount(count, _classes(str(named or "")))
    series = _query("SERIES", **patient, StudyInstanceUID=study_uid, SeriesInstanceUID="")
    # A set: pynetdicom's qrscp answers a SERIES query with one match per instance.
    series_uids = {str(m.SeriesInstanceUID) for m in session.find(series, model=model)}
    count = sum(
        _series_count(session, model=model, study_uid=study_uid, series_uid=uid, patient=patient)
        for uid in sorted(series_uids)
    )
    return StudyCount(count, None)


_STUDY_UID, _STUDY_COUNT, _STUDY_CLASSES = 0x0020000D, 0x00201208, 0x00080062


def _study_count(data: bytes, ts) -> tuple[str, int | None, tuple[str, ...] | None]:
    """StudyInstanceUID, NumberOfStudyRelatedInstances and SOPClassesInStudy of a
    C-FIND match, read from its bytes (a match per study of every chunk a worker
    takes: pydicom's full decode cost more than the rest of counting). A match
    without SOPClassesInStudy (a C-MOVE's count does not ask for it) is read the
    same way: the match is whole, so its end says the tag is absent."""
    if ts.is_little_endian and not ts.is_deflated:
        found = scan_tags(
            data,
            {_STUDY_UID, _STUDY_COUNT, _STUDY_CLASSES},
            implicit=ts.is_implicit_VR,
            whole=True,
        )
        if found is not None:
            text = {tag: value.decode("ascii", "replace") for tag, value in found.items()}
            return (
                text.get(_STUDY_UID, "").strip("\x00 "),
                _count(text.get(_STUDY_COUNT, "")),
                _classes(text.get(_STUDY_CLASSES, "")),
            )
    match = read_dataset(io.BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)
    classes = match.get("SOPClassesInStudy", None)
    if classes is not None and not isinstance(classes, str):
        classes = "\\".join(str(uid) for uid in classes)
    return (
        str(match.get("StudyInstanceUID", "") or ""),
        _count(match.get("NumberOfStudyRelatedInstances", "")),
        _classes(str(classes or "")),
    )


def count_studies(
    session: Session, study_uids: Sequence[str], *, model: str = "S", classes: bool = True
) -> dict[str, StudyCount]:
    """NumberOfStudyRelatedInstances of several studies with one C-FIND, naming them
    in a UID list (PS3.4 C.2.2.2.2), for the studies whose count the PACS gives
    that way; the others are for ``count_instances``, one by one. One query
    instead of one per study: the node's queries per minute go further. With
    ``classes``, the same query asks for SOPClassesInStudy: what a C-GET of the
    study needs to propose (the PACS computes it, so a C-MOVE does not ask)."""
    wanted = set(study_uids)
    if model != "S" or len(wanted) < 2:
        return {}  # patient root names the patient at STUDY level: one by one
    keys = {"NumberOfStudyRelatedInstances": "", **({"SOPClassesInStudy": ""} if classes else {})}
    query = _query("STUDY", StudyInstanceUID=sorted(wanted), **keys)
    counts: dict[str, StudyCount] = {}
    try:
        for data, ts in session.find_raw(query, model=model):
            uid, count, named = _study_count(data, ts)
            if uid in wanted and count is not None:
                counts[uid] = StudyCount(count, named)
    except PacsStatusError:
        return {}  # the PACS refuses UID lists
    return counts


def find_classes(
    session: Session,
    *,
    study_uid: str,
    series_uid: str | None = None,
    patient_id: str | None = None,
    model: str = "S",
) -> dict[str, set[str]] | None:
    """SOP classes of the study's instances by series, from IMAGE-level C-FINDs
    asking SOPClassUID: what a C-GET must offer where the PACS does not name
    SOPClassesInStudy. None when the PACS does not say (no match names one).

    One query for the study where the PACS answers it without a series (Orthanc),
    else a SERIES-level query and one IMAGE-level query per series (dcmqrscp
    answers nothing at IMAGE level without SeriesInstanceUID)."""
    patient = {"PatientID": patient_id} if model == "P" and patient_id else {}

    def images(series: str | None) -> dict[str, set[str]]:
        keys = {"SeriesInstanceUID": series or ""}
        query = _query(
            "IMAGE", **patient, StudyInstanceUID=study_uid, **keys, SOPInstanceUID="",
            SOPClassUID="",
        )  # fmt: skip
        found: dict[str, set[str]] = {}
        for match in session.find(query, model=model):
            uid = str(match.get("SOPClassUID", "") or "").strip()
            if uid:
                found.setdefault(str(match.get("SeriesInstanceUID", "") or ""), set()).add(uid)
        return found

    found = images(series_uid)
    if not found and not series_uid:
        for uid in list_series(session, study_uid=study_uid, patient_id=patient_id, model=model):
            found.update(images(uid))
    return found or None


def list_series(
    session: Session, *, study_uid: str, patient_id: str | None = None, model: str = "S"
) -> list[str]:
    """The study's SeriesInstanceUIDs, from a SERIES-level C-FIND."""
    patient = {"PatientID": patient_id} if model == "P" and patient_id else {}
    query = _query("SERIES", **patient, StudyInstanceUID=study_uid, SeriesInstanceUID="")
    return sorted({str(m.get("SeriesInstanceUID", "")) for m in session.find(query, model=model)})
