"""Which of a project's instances a download or a deletion covers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import PurePosixPath

from django.db.models import Count, Q, QuerySet, Sum

from pulls.deid.projects import uid_in
from pulls.models import FindResult, Job, JobKind, Project, RetrievedInstance
from pulls.retrieval.manifests import job_instances

BATCH = 500


def project_instances(project: Project) -> QuerySet[RetrievedInstance]:
    return RetrievedInstance.objects.filter(project=project)


def job_selection(job: Job, *, rows: Iterable[int] = ()) -> QuerySet[RetrievedInstance]:
    """A job's instances in its project; with ``rows``, those of the studies (series)
    of these rows of a retrieval job, or of these matches' studies for a find job
    (row numbers as the tables show them)."""
    rows = sorted(set(rows))
    if not rows:
        return job_instances(job)
    named = uid_in(job.project)
    if job.kind == JobKind.FIND:
        studies = set(
            FindResult.objects.filter(job=job, item__row__in=rows).values_list(
                "study_instance_uid", flat=True
            )
        )
        return project_instances(job.project).filter(
            study_instance_uid__in=[named(uid) for uid in studies if uid]
        )
    studies, series = set(), set()
    for identifier in job.items.filter(row__in=rows).values_list("identifier", flat=True):
        if identifier.get("SeriesInstanceUID"):
            series.add(named(identifier["SeriesInstanceUID"]))
        elif identifier.get("StudyInstanceUID"):
            studies.add(named(identifier["StudyInstanceUID"]))
    return project_instances(job.project).filter(
        Q(study_instance_uid__in=studies) | Q(series_instance_uid__in=series)
    )


def totals(instances: QuerySet[RetrievedInstance]) -> dict[str, int]:
    """What a selection holds: instances, studies and bytes (for the audit event)."""
    counted = instances.aggregate(
        instances=Count("pk"), studies=Count("study_instance_uid", distinct=True), bytes=Sum("size")
    )
    return {key: value or 0 for key, value in counted.items()}


def in_batches(instances: QuerySet[RetrievedInstance]) -> Iterator[list[RetrievedInstance]]:
    """The selection in batches by primary key: no cursor held open for the whole
    of a long download (SQLite readers would hold back its checkpoints)."""
    last = 0
    while True:
        batch = list(
            instances.filter(pk__gt=last)
            .order_by("pk")
            .only("pk", "path", "series_instance_uid", "size")[:BATCH]
        )
        if not batch:
            return
        yield batch
        last = batch[-1].pk


def relative_path(value: str) -> PurePosixPath | None:
    """A record's path if it stays inside the project's folder (records come from
    the sanitised layout; this guards against a row edited by hand)."""
    path = PurePosixPath(value)
    if not value or path.is_absolute() or ".." in path.parts:
        return None
    return path
