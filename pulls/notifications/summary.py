"""What is told of an ended job: the same in the e-mail and the webhook."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.urls import reverse

from pulls.models import Job


def job_link(job: Job) -> str:
    return settings.PACSNPULL_BASE_URL + reverse("job_detail", kwargs={"code": job.code})


def job_summary(job: Job) -> dict[str, Any]:
    """The job's outcome: codes, counts and a link; no query values, no names."""
    return {
        "event": "job.ended",
        "job": str(job.code),
        "kind": job.kind,
        "status": job.status,
        "title": job.title,
        "project": str(job.project.code),
        "project_name": job.project.name,
        "node": job.node.name,
        "rows": job.items_total,
        "done": job.items_done,
        "failed": job.items_failed,
        "cancelled": job.items_cancelled,
        "matches": job.matches,
        "instances": job.instances_received,
        "instances_expected": job.instances_expected,
        "bytes": job.bytes_received,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "url": job_link(job),
    }
