"""Recording what became of each row: its counts, its records and its audit event.

A retrieval's row ends with work that needs no association (waiting for late
arrivals, placing files, counting, writing the records). ``RowFinisher`` does
it on a thread of its own while the next row's transfer goes on, one row at a
time and in order, so the association is never idle for the bookkeeping.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import connection, connections, transaction

from pulls import items as item_life
from pulls.audit import audit_record
from pulls.dicom import PacsError
from pulls.models import AuditAction, Job, JobItem, JobStatus
from pulls.retrieval import DiskFull

log = logging.getLogger(__name__)


def audit_row(
    job: Job,
    item: JobItem,
    action: AuditAction,
    *,
    success: bool,
    counts: dict[str, object] | None = None,
    message: str = "",
) -> None:
    audit_record(
        action=action,
        actor=job.owner,
        actor_label=f"{job.owner.get_username()} (worker)",
        job=job,
        success=success,
        target=f"row {item.row}",
        details={"query": item.identifier, **(counts or {})},
        message=message,
    )


def record_failure(
    job: Job, item: JobItem, token: uuid.UUID, action: AuditAction, exc: PacsError
) -> None:
    """The row failed (or waits for a retry): its outcome and its audit event together."""
    with transaction.atomic():
        item_life.item_fail(
            item,
            token,
            message=str(exc),
            code=getattr(exc, "status", None),
            retryable=exc.retryable,
            **getattr(exc, "counts", {}),
        )
        audit_row(job, item, action, success=False, message=str(exc))


def pause_for_disk(job: Job, item: JobItem, token: uuid.UUID, exc: DiskFull) -> None:
    """Nothing is wrong with the row: it goes back, and the job waits for space."""
    item_life.item_release(item, token)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PAUSED, waiting_reason=f"paused: {exc}")
    log.warning("job %s paused: disk full", job.pk)


class RowFinisher:
    """Finishes rows (``items.Outcome`` or ``items.Pending``) in order, on a thread.

    At most one row is being finished while the caller works on the next; an
    error that is not the row's own (a bug, the database gone) is raised to the
    caller at its next ``submit`` or at ``close``. Inside a transaction of the
    caller's (tests), rows are finished inline: another connection could not
    see that transaction's rows.
    """

    def __init__(self, job: Job, token: uuid.UUID, action: AuditAction) -> None:
        self.job = job
        self.token = token
        self.action = action
        self.done = 0
        self.failed = 0
        self.disk_full = False
        self._pool = None if connection.in_atomic_block else ThreadPoolExecutor(1)
        self._last: Future | None = None

    def submit(self, item: JobItem, result: item_life.Outcome | item_life.Pending) -> None:
        self.wait()
        if self._pool is None:
            self._finish(item, result)
        else:
            self._last = self._pool.submit(self._finish, item, result)

    def wait(self) -> None:
        """Until the row being finished is; raises what went wrong beyond the row."""
        last, self._last = self._last, None
        if last is not None:
            last.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.submit(connections.close_all).result()
                self._pool.shutdown()

    def _finish(self, item: JobItem, result: item_life.Outcome | item_life.Pending) -> None:
        job, token = self.job, self.token
        try:
            outcome = result.finish() if isinstance(result, item_life.Pending) else result
        except DiskFull as exc:
            pause_for_disk(job, item, token, exc)
            self.disk_full = True
            return
        except PacsError as exc:  # incomplete: retried, or failed with the numbers
            record_failure(job, item, token, self.action, exc)
            self.failed += 1
            return
        with transaction.atomic():
            if outcome.save is not None:
                outcome.save()
            item_life.item_succeed(item, token, **outcome.counts)
            audit_row(job, item, self.action, success=True, counts=outcome.counts)
        self.done += 1
