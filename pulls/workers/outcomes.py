"""Recording what became of each row: its counts, its records and its audit event.

A retrieval's row ends with work that needs no association (waiting for late
arrivals, placing files, counting, writing the records). ``RowFinisher`` does
it on a thread of its own while the next rows' transfers go on, in order, and
writes the rows it has finished within a quarter of a second in one
transaction: per row, a transaction and the compiled INSERT of its audit event
cost more than its instance records.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid

from django.conf import settings
from django.db import connection, connections, transaction

from pulls.audit.events import EventRows, audit_event
from pulls.dicom import PacsError
from pulls.jobs import items as item_life
from pulls.jobs.space import DiskFull
from pulls.models import AuditAction, AuditEvent, Job, JobItem, JobStatus
from pulls.retrieval.records import save_together

log = logging.getLogger(__name__)

# Rows waiting to be finished before the runner waits (bounds memory and how far
# transfers run ahead of a full disk being noticed).
_DEPTH = 8
# Rows written in one transaction at most, and how long a finished row waits
# for others to be written with (live progress shows it then).
_BATCH = 50
_WRITE_WITHIN = 0.25
_STOP = object()
_REFRESH = object()  # bring the job's counters up to date (refresh_counters)
_HURRY = object()  # from now on, write rows as soon as they are finished (hurry)


def _row_event(
    job: Job,
    item: JobItem,
    action: AuditAction,
    *,
    success: bool,
    counts: dict[str, object] | None = None,
    message: str = "",
) -> AuditEvent:
    return audit_event(
        action=action,
        actor=job.owner,
        actor_label=f"{job.owner.get_username()} (worker)",
        job=job,
        success=success,
        target=f"row {item.row}",
        details={"query": item.identifier, **(counts or {})},
        message=message,
    )


def _retry_in(exc: PacsError) -> int | None:
    """Seconds until a retry: at least as long as the server asked (HTTP 429, 503)."""
    asked = getattr(exc, "retry_after", None)
    return None if asked is None else max(asked, settings.PACSNPULL_RETRY_SECONDS)


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
            retry_in=_retry_in(exc),
            **getattr(exc, "counts", {}),
        )
        _row_event(job, item, action, success=False, message=str(exc)).save()


def pause_for_disk(job: Job, item: JobItem, token: uuid.UUID, exc: DiskFull) -> None:
    """Nothing is wrong with the row: it goes back, and the job waits for space."""
    item_life.item_release(item, token)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PAUSED, waiting_reason=f"paused: {exc}")
    log.warning("job %s paused: disk full", job.pk)


class RowFinisher:
    """Finishes rows (``items.Outcome`` or ``items.Pending``) in order, on a thread.

    Up to ``_DEPTH`` rows wait while the caller works on the next; the rows
    finished within ``_WRITE_WITHIN`` seconds are written together (their
    records, outcomes and audit events in one transaction); the job's
    counters are refreshed there too when the caller asks (refresh_counters).
    An error that is not the row's own (a bug, the database gone) is raised to
    the caller at its next ``submit`` or at ``close``; the rows not written
    then keep their lease until it expires and are worked again. Inside a
    transaction of the caller's (tests), rows are finished inline: another
    connection could not see that transaction's rows.
    """

    def __init__(self, job: Job, token: uuid.UUID, action: AuditAction) -> None:
        self.job = job
        self.token = token
        self.action = action
        self.done = 0
        self.failed = 0
        self.disk_full = False
        self._error: BaseException | None = None  # the thread then takes no more rows
        self._raised = False
        self._queue: queue.Queue = queue.Queue(maxsize=_DEPTH)
        self._thread: threading.Thread | None = None
        if not connection.in_atomic_block:
            self._thread = threading.Thread(target=self._run, name="row-finisher", daemon=True)
            self._thread.start()

    def submit(self, item: JobItem, result: item_life.Outcome | item_life.Pending) -> None:
        self._raise_error()
        if self._thread is None:
            finished: list[tuple[JobItem, item_life.Outcome]] = []
            self._take(item, result, finished)
            self._write(finished)
        else:
            self._queue.put((item, result))

    def refresh_counters(self) -> None:
        """Bring the job's counters up to date (live progress) on the thread:
        the caller's transfer goes on (a refresh reads every row of the job,
        23-46 ms at 100,000 rows; bench/bookkeeping.py)."""
        self._raise_error()
        if self._thread is None:
            item_life.job_refresh_counters(self.job.pk)
        else:
            self._queue.put(_REFRESH)

    def hurry(self) -> None:
        """The job's rows are running out: the rows finished so far are written
        now, and from then on each row as soon as it is finished, not within
        ``_WRITE_WITHIN``. The job then ends with its last transfer instead of
        with a quarter second's batch of rows written after it (on SQLite, one
        worker's batch after the other's, as they wait for the lock)."""
        if self._thread is not None:
            self._queue.put(_HURRY)

    def close(self) -> None:
        """Finish every row submitted, then raise what went wrong beyond a row."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None and not self._raised:
            self._raised = True
            raise self._error

    def _run(self) -> None:
        finished: list[tuple[JobItem, item_life.Outcome]] = []
        due = 0.0  # when the rows in ``finished`` are written at the latest
        within = _WRITE_WITHIN
        try:
            while True:
                wait = max(due - time.monotonic(), 0.0) if finished else None
                try:
                    entry = self._queue.get(timeout=wait)
                except queue.Empty:
                    entry = None  # time to write what is finished
                if entry is _STOP:
                    break
                if self._error is not None:
                    continue  # keep taking rows, so that the caller never blocks
                try:
                    if entry is None:
                        self._write(finished)
                        continue
                    if entry is _HURRY:
                        within = 0.0
                        self._write(finished)
                        continue
                    if entry is _REFRESH:  # rows not yet written join the next one
                        item_life.job_refresh_counters(self.job.pk)
                        continue
                    if not finished:
                        due = time.monotonic() + within
                    self._take(*entry, finished)
                    if len(finished) >= _BATCH:
                        self._write(finished)
                except BaseException as exc:  # noqa: BLE001  (handed to the caller)
                    self._error = exc
                    finished.clear()
            if self._error is None:
                self._write(finished)
        except BaseException as exc:  # noqa: BLE001  (handed to the caller)
            self._error = exc
        finally:
            connections.close_all()

    def _take(
        self,
        item: JobItem,
        result: item_life.Outcome | item_life.Pending,
        finished: list[tuple[JobItem, item_life.Outcome]],
    ) -> None:
        """Finish the row's work; a success joins ``finished``, anything else is
        recorded now (after the successes before it)."""
        job, token = self.job, self.token
        try:
            outcome = result.finish() if isinstance(result, item_life.Pending) else result
        except DiskFull as exc:
            self._write(finished)
            pause_for_disk(job, item, token, exc)
            self.disk_full = True
            return
        except PacsError as exc:  # incomplete: retried, or failed with the numbers
            self._write(finished)
            record_failure(job, item, token, self.action, exc)
            self.failed += 1
            return
        finished.append((item, outcome))

    def _write(self, finished: list[tuple[JobItem, item_life.Outcome]]) -> None:
        if not finished:
            return
        # Made before the transaction, which then holds the write lock for less
        # time (see EventRows).
        events = EventRows(
            [
                _row_event(self.job, item, self.action, success=True, counts=outcome.counts)
                for item, outcome in finished
            ]
        )
        with transaction.atomic():
            save_together(outcome.save for _item, outcome in finished if outcome.save is not None)
            item_life.items_succeed(
                [(item, outcome.counts) for item, outcome in finished], self.token
            )
            events.insert()
        self.done += len(finished)
        finished.clear()
