"""The manifest of a retrieval job: every instance of its studies (series) on disk."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Q

from pulls.deid.projects import uid_in
from pulls.jobs.exports import csv_stream
from pulls.models import Job, RetrievedInstance

COLUMNS = [
    "path",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "bytes",
    "SOPClassUID",
    "TransferSyntaxUID",
    "burned-in text",
]


def job_instances(job: Job):
    """The job's studies (series) in its project: by the project's names for
    them (a pseudonymised project's replacement UIDs)."""
    named = uid_in(job.project)
    studies, series = set(), set()
    for identifier in job.items.values_list("identifier", flat=True):
        if identifier.get("SeriesInstanceUID"):
            series.add(named(identifier["SeriesInstanceUID"]))
        else:
            studies.add(named(identifier.get("StudyInstanceUID", "")))
    return RetrievedInstance.objects.filter(project=job.project).filter(
        Q(study_instance_uid__in=studies) | Q(series_instance_uid__in=series)
    )


def manifest_chunks(job: Job) -> Iterator[str]:
    return instances_csv(job_instances(job))


def instances_csv(instances) -> Iterator[str]:
    """A manifest of these instances (a RetrievedInstance queryset), by path."""
    rows = (
        instances.order_by("path")
        .values_list(
            "path",
            "patient_id",
            "study_instance_uid",
            "series_instance_uid",
            "sop_instance_uid",
            "modality",
            "size",
            "sop_class_uid",
            "transfer_syntax",
            "burned_in",
        )
        .iterator(chunk_size=2000)
    )
    return csv_stream(COLUMNS, rows)
