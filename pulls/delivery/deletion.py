"""Deleting a project's files: by an owner (a job's or the whole project's), or
by the project's retention (an operator's setting, off by default).

Each file goes first, then its record, a batch at a time: a file that cannot be
removed keeps its record, so the records always say what is on disk. The jobs
say when and by whom; the audit log keeps the event with what went.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from pulls.audit.events import audit_record
from pulls.delivery.selection import (
    in_batches,
    job_selection,
    project_instances,
    relative_path,
    totals,
)
from pulls.models import (
    ACTIVE_JOB_STATUSES,
    AuditAction,
    Job,
    JobKind,
    NiftiSeries,
    Project,
    RetrievedInstance,
)

RETENTION = "retention"


@dataclass
class Deleted:
    instances: int = 0
    bytes: int = 0
    nifti_series: int = 0
    failed: list[str] = field(default_factory=list)


def _refuse_while_retrieving(project: Project) -> None:
    busy = project.jobs.filter(status__in=ACTIVE_JOB_STATUSES).exclude(kind=JobKind.FIND)
    if busy.exists():
        raise ValidationError(
            f"{busy.count()} retrieval job(s) of this project are still queued, running or "
            "paused: wait for them to end, or cancel them, then delete the files."
        )


def _remove_empty_folders(root: Path, folders: set[Path]) -> None:
    """The folders left empty, up to (not including) the project's folder."""
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        current = folder
        while current != root and root in current.parents:
            try:
                current.rmdir()
            except OSError:  # not empty, or gone already
                break
            current = current.parent


def _delete_nifti(project: Project, series: set[str], root: Path, deleted: Deleted) -> None:
    """NIfTI of the series none of whose instances are left."""
    kept = set(
        RetrievedInstance.objects.filter(
            project=project, series_instance_uid__in=series
        ).values_list("series_instance_uid", flat=True)
    )
    gone = NiftiSeries.objects.filter(project=project, series_instance_uid__in=series - kept)
    folders = set()
    for converted in gone:
        folder = relative_path(f"nifti/{converted.folder}")
        if folder is None:
            continue
        for name in converted.files.split():
            (root / folder / name).unlink(missing_ok=True)
        folders.add(root / folder)
    deleted.nifti_series += gone.delete()[0]
    _remove_empty_folders(root, folders)


def delete_instances(project: Project, instances: QuerySet[RetrievedInstance]) -> Deleted:
    root = project.storage_dir
    deleted = Deleted()
    folders: set[Path] = set()
    series: set[str] = set()
    for batch in in_batches(instances):
        gone = []
        for instance in batch:
            path = relative_path(instance.path)
            if path is None:
                deleted.failed.append(instance.path)
                continue
            try:
                (root / path).unlink(missing_ok=True)
            except OSError as exc:
                deleted.failed.append(f"{instance.path}: {os.strerror(exc.errno or 0)}")
                continue
            gone.append(instance.pk)
            folders.add((root / path).parent)
            series.add(instance.series_instance_uid)
            deleted.bytes += instance.size
        deleted.instances += RetrievedInstance.objects.filter(pk__in=gone).delete()[0]
    _delete_nifti(project, series, root, deleted)
    _remove_empty_folders(root, folders)
    return deleted


def delete_files(
    *,
    project: Project,
    instances: QuerySet[RetrievedInstance],
    jobs: list[Job],
    scope: str,
    actor: Any = None,
    actor_label: str = "",
    request: HttpRequest | None = None,
) -> Deleted:
    """Delete these files of the project, mark the jobs, record the event."""
    _refuse_while_retrieving(project)
    before = totals(instances)
    deleted = delete_instances(project, instances)
    by = actor_label or (actor.get_username() if actor is not None else "")
    if not deleted.failed:
        Job.objects.filter(pk__in=[job.pk for job in jobs]).update(
            files_deleted_at=timezone.now(), files_deleted_by=by[:150]
        )
    audit_record(
        action=AuditAction.FILES_DELETED,
        actor=actor,
        actor_label=actor_label,
        request=request,
        success=not deleted.failed,
        project=project,
        job=jobs[0] if len(jobs) == 1 else None,
        target=scope,
        details={
            "studies": before["studies"],
            "instances": deleted.instances,
            "bytes": deleted.bytes,
            "nifti_series": deleted.nifti_series,
            "not_deleted": len(deleted.failed),
        },
        message="; ".join(deleted.failed[:5]),
    )
    if deleted.failed:
        raise ValidationError(
            f"{deleted.instances} files were deleted, {len(deleted.failed)} could not be "
            f"(first: {deleted.failed[0]}); their records are kept. Ask an operator to check "
            "the permissions of the project's folder."
        )
    return deleted


def job_files_delete(*, job: Job, user: Any, request: HttpRequest | None = None) -> Deleted:
    if job.kind == JobKind.FIND:
        raise ValidationError("A find job has no files of its own.")
    return delete_files(
        project=job.project,
        instances=job_selection(job),
        jobs=[job],
        scope=f"files of job {job.code}",
        actor=user,
        request=request,
    )


def project_files_delete(*, project: Project, user: Any, request: HttpRequest | None = None):
    jobs = list(project.jobs.exclude(kind=JobKind.FIND).filter(files_deleted_at__isnull=True))
    return delete_files(
        project=project,
        instances=project_instances(project),
        jobs=jobs,
        scope="all files of the project",
        actor=user,
        request=request,
    )


def expired_jobs(now=None) -> QuerySet[Job]:
    """Finished retrieval jobs of projects with a retention, past it, files not deleted."""
    now = now or timezone.now()
    expired = Job.objects.none()
    for project in Project.objects.filter(retention_days__isnull=False):
        expired |= (
            Job.objects.filter(
                project=project,
                finished_at__lt=now - timedelta(days=project.retention_days),
                files_deleted_at__isnull=True,
            )
            .exclude(kind=JobKind.FIND)
            .exclude(status__in=ACTIVE_JOB_STATUSES)
        )
    return expired


def apply_retention(now=None) -> dict[str, int]:
    """Delete the files of every job past its project's retention (Celery beat)."""
    counts = {"jobs": 0, "instances": 0, "refused": 0}
    for job in expired_jobs(now).select_related("project"):
        try:
            deleted = delete_files(
                project=job.project,
                instances=job_selection(job),
                jobs=[job],
                scope=f"files of job {job.code} (retention of {job.project.retention_days} days)",
                actor_label=RETENTION,
            )
        except ValidationError:
            counts["refused"] += 1  # a job still retrieving, or files that could not go
            continue
        counts["jobs"] += 1
        counts["instances"] += deleted.instances
    return counts
