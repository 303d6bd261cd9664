"""What a job's live progress shows: counts, rates, ETA, last error, state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property

from django.db.models import Count, Sum
from django.utils import timezone

from pulls.models import ACTIVE_JOB_STATUSES, ItemStatus, Job, JobItem, JobKind, JobStatus

# The current rate is measured over the rows finished this long ago at most.
RATE_WINDOW_SECONDS = 30

_STATE_CSS = {
    JobStatus.DRAFT: "secondary",
    JobStatus.QUEUED: "info",
    JobStatus.RUNNING: "primary",
    JobStatus.PAUSED: "warning",
    JobStatus.CANCELLED: "dark",
    JobStatus.DONE: "success",
    JobStatus.FAILED: "danger",
}


@dataclass
class JobProgress:
    job: Job
    state: str
    state_css: str
    finished: int
    percent_done: int
    percent_failed: int
    rows_per_second: float | None
    instances_per_second: float | None
    megabytes_per_second: float | None
    eta_seconds: int | None

    @cached_property
    def last_error(self) -> str:
        """Asked for by the job page only (the dashboard lists many jobs)."""
        found = (
            JobItem.objects.filter(job=self.job)
            .exclude(error_message="")
            .exclude(status=ItemStatus.CANCELLED)
            .order_by("-finished_at", "-pk")
            .values_list("row", "error_message")
            .first()
        )
        return f"Row {found[0]}: {found[1]}" if found else ""

    @property
    def active(self) -> bool:
        return self.job.status in ACTIVE_JOB_STATUSES

    @property
    def eta(self) -> str:
        if self.eta_seconds is None:
            return ""
        minutes, seconds = divmod(self.eta_seconds, 60)
        hours, minutes = divmod(minutes, 60)
        if hours:
            return f"{hours} h {minutes:02d} min"
        return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def _state(job: Job) -> tuple[str, str]:
    label = job.get_status_display()
    reason = job.waiting_reason
    if job.status in ACTIVE_JOB_STATUSES and reason:
        if "window" in reason:
            return "waiting for window", "warning"
        if "suspended" in reason:
            return "node suspended", "warning"
        if "throttled" in reason:
            return "throttled", "warning"
    return label, _STATE_CSS.get(job.status, "secondary")


def job_progress(job: Job) -> JobProgress:
    total = job.items_total or 0
    finished = job.items_done + job.items_failed + job.items_cancelled
    now = timezone.now()
    rows_rate = inst_rate = mb_rate = None
    if job.started_at is not None and job.status != JobStatus.DRAFT:
        recent = {"n": 0}
        if job.status in ACTIVE_JOB_STATUSES:  # a finished job's rate is over its whole run
            recent = JobItem.objects.filter(
                job=job,
                status__in=(ItemStatus.DONE, ItemStatus.FAILED),
                finished_at__gte=now - timedelta(seconds=RATE_WINDOW_SECONDS),
            ).aggregate(n=Count("pk"), inst=Sum("instances_received"), nbytes=Sum("bytes_received"))
        if recent["n"]:
            span = min(RATE_WINDOW_SECONDS, max(1.0, (now - job.started_at).total_seconds()))
            rows, inst, nbytes = recent["n"], recent["inst"] or 0, recent["nbytes"] or 0
        else:  # over the whole run
            end = job.finished_at or now
            span = max(0.1, (end - job.started_at).total_seconds())
            rows, inst, nbytes = (
                job.items_done + job.items_failed,
                job.instances_received,
                (job.bytes_received),
            )
        rows_rate = rows / span
        if job.kind != JobKind.FIND:
            inst_rate, mb_rate = inst / span, nbytes / span / 1e6
    eta = None
    if job.status in ACTIVE_JOB_STATUSES and rows_rate:
        eta = int((total - finished) / rows_rate)
    state, css = _state(job)
    return JobProgress(
        job=job,
        state=state,
        state_css=css,
        finished=finished,
        percent_done=int(100 * job.items_done / total) if total else 0,
        percent_failed=int(100 * job.items_failed / total) if total else 0,
        rows_per_second=rows_rate,
        instances_per_second=inst_rate,
        megabytes_per_second=mb_rate,
        eta_seconds=eta,
    )
