"""The manifest of a retrieval job: every instance of its studies (series) on disk."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from django.db.models import Q

from pulls.exports import spreadsheet_safe
from pulls.models import Job, RetrievedInstance

COLUMNS = [
    "path",
    "PatientID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "Modality",
    "bytes",
]


def job_instances(job: Job):
    studies, series = set(), set()
    for identifier in job.items.values_list("identifier", flat=True):
        if identifier.get("SeriesInstanceUID"):
            series.add(identifier["SeriesInstanceUID"])
        else:
            studies.add(identifier.get("StudyInstanceUID", ""))
    return RetrievedInstance.objects.filter(project=job.project).filter(
        Q(study_instance_uid__in=studies) | Q(series_instance_uid__in=series)
    )


def manifest_chunks(job: Job) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    rows = (
        job_instances(job)
        .order_by("path")
        .values_list(
            "path",
            "patient_id",
            "study_instance_uid",
            "series_instance_uid",
            "sop_instance_uid",
            "modality",
            "size",
        )
        .iterator(chunk_size=2000)
    )
    for n, row in enumerate(rows, 1):
        writer.writerow([spreadsheet_safe(value) for value in row])
        if n % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
