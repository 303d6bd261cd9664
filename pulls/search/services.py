"""The Search page's work: a search is a one-row find job on the interactive
queue (the node's limits, the audit, the job's life as any other), shown on a
page of its own; a study expands into its series by a SERIES-level search of
it; ticked studies or series become a retrieval job at once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest

from accounts.models import User
from pulls import services
from pulls.dicom.identifiers import row_errors
from pulls.models import Job, JobKind, JobStatus, PacsNode, Project

# Search form field -> the DICOM keyword it queries, by level.
_KEYS = {
    "patient_id": {"STUDY": "PatientID", "SERIES": "PatientID"},
    "patient_name": {"STUDY": "PatientName", "SERIES": "PatientName"},
    "accession_number": {"STUDY": "AccessionNumber", "SERIES": "AccessionNumber"},
    "modality": {"STUDY": "ModalitiesInStudy", "SERIES": "Modality"},
    "description": {"STUDY": "StudyDescription", "SERIES": "SeriesDescription"},
}
_NARROWING = ("patient_id", "patient_name", "accession_number", "date_from", "date_to")


class SearchError(ValidationError):
    """What is wrong with a search, by form field (as Django's ValidationError dict)."""


def search_row(
    *, level: str, date_from: dt.date | None = None, date_to: dt.date | None = None, **terms: str
) -> dict[str, str]:
    """The query row of a search (its values as typed; return keys are added
    when it runs, as for every find)."""
    row = {"QueryRetrieveLevel": level}
    for field, value in terms.items():
        value = (value or "").strip()
        if value and field in _KEYS:
            row[_KEYS[field][level]] = value.upper() if field == "modality" else value
    if date_from or date_to:
        start = f"{date_from:%Y%m%d}" if date_from else ""
        end = f"{date_to:%Y%m%d}" if date_to else ""
        row["StudyDate"] = start if start == end else f"{start}-{end}"
    return row


def _check(row: dict[str, str], *, node: PacsNode, terms: dict) -> None:
    if not any(terms.get(field) for field in _NARROWING):
        raise SearchError(
            "Give a patient ID, a name, an accession number or a date range: a search "
            "without one would list the whole archive."
        )
    by_key = {keys["STUDY"]: field for field, keys in _KEYS.items()}
    by_key.update({keys["SERIES"]: field for field, keys in _KEYS.items()})
    by_key["StudyDate"] = "date_from"
    problems: dict[str, list[str]] = {}
    for error in row_errors(row, character_set=node.character_set):
        problems.setdefault(by_key.get(error.key, "__all__"), []).append(error.reason)
    if problems:
        raise SearchError(problems)


def search_start(
    *,
    user: User,
    project: Project,
    node: PacsNode,
    level: str = "STUDY",
    request: HttpRequest | None = None,
    **terms,
) -> Job:
    """Check the search and start it as a one-row find job (interactive queue)."""
    row = search_row(level=level, **terms)
    _check(row, node=node, terms=terms)
    shown = ", ".join(f"{k}={v}" for k, v in row.items() if k != "QueryRetrieveLevel")
    with transaction.atomic():
        job = services.job_create(
            kind=JobKind.FIND, owner=user, project=project, node=node, rows=[row],
            title=f"Search: {shown}"[:200], source_name="search", start=True, request=request,
        )  # fmt: skip
        Job.objects.filter(pk=job.pk).update(is_search=True)
    job.refresh_from_db()
    return job


def search_expand(
    *, search: Job, user: User, study_uid: str, request: HttpRequest | None = None
) -> Job:
    """A study of a search, expanded: a SERIES-level search of it."""
    found = search.find_results.filter(study_instance_uid=study_uid)
    if not search.is_search or not found.exists():
        raise ValidationError("That study is not among this search's results.")
    row = {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study_uid}
    patient = found.values_list("patient_id", flat=True).first()
    if search.node.query_model == "P" and patient:
        row["PatientID"] = patient
    with transaction.atomic():
        job = services.job_create(
            kind=JobKind.FIND, owner=user, project=search.project, node=search.node, rows=[row],
            title=f"Search: series of {study_uid}"[:200], source_name="search", start=True,
            follows=search, request=request,
        )  # fmt: skip
        Job.objects.filter(pk=job.pk).update(is_search=True)
    job.refresh_from_db()
    return job


def search_retrieve(
    *,
    search: Job,
    user: User,
    match_ids: Iterable[int],
    method: str,
    request: HttpRequest | None = None,
) -> Job:
    """The ticked studies (or series, of a series search) as a retrieval job, started."""
    if search.status != JobStatus.DONE:
        raise ValidationError("The search has not finished yet.")
    ids = [int(i) for i in match_ids]
    if not ids:
        raise ValidationError("Tick the studies or series to retrieve.")
    series = search.items.filter(identifier__QueryRetrieveLevel="SERIES").exists()
    job = services.retrieval_create_from_find(
        find_job=search,
        user=user,
        method=method,
        level="SERIES" if series else "STUDY",
        only=ids,
        request=request,
    )
    return services.job_start(job=job, user=user, request=request)


def search_save(*, search: Job, user: User, title: str, request: HttpRequest | None = None) -> Job:
    """Keep a search as a find job of the project, under ``title``."""
    services.require_writer(user=user, project=search.project)
    Job.objects.filter(pk=search.pk).update(
        is_search=False, title=(title.strip() or search.title)[:200]
    )
    search.refresh_from_db()
    return search
