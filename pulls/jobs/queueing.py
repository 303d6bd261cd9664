"""Sending a job's rows to the workers: chunks of item ids as Celery messages,
each with a priority from its first row, all of one call in one go.

The queue itself is reached through the ``enqueue`` callables that
``pulls.workers.tasks`` passes in, so this module stays importable without Celery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from pulls.models import ACTIVE_JOB_STATUSES, ItemStatus, Job, JobItem

log = logging.getLogger(__name__)

# Rows per task: several per association, few enough that every worker gets
# some. A worker that has worked its chunk takes the job's next queued rows on
# the same association (runner._more_rows), so small chunks cost no extra
# association set-ups.
CHUNK_SIZES = {"find": 50, "move": 5, "get": 5}
CHUNK_SIZE = CHUNK_SIZES["find"]


@dataclass(frozen=True)
class Chunk:
    """One task message: the items it carries, its queue and its priority there."""

    ids: list[int]
    queue: str
    priority: int


# How the queue is reached (the chunks of one call, sent together): set by
# pulls.workers.tasks.
Enqueue = Callable[[list[Chunk]], None]
# A chunk's priority on its queue (Redis hands out 0 first, then 3, 6, 9), from
# the number of the first row it carries: a job's first rows go ahead of other
# jobs' later rows. A small job started behind a 20,000-row one used to wait for
# all of it; now it waits for the chunks already running (a worker goes on with
# one job for up to PACSNPULL_TURN_SECONDS). A job's own rows keep their order.
PRIORITY_UP_TO_ROW = ((50, 0), (500, 3), (5000, 6))
LAST_PRIORITY = 9
# The rest of a job's rows (job id, last row sent), for a worker to send: a web
# request sends the first ENQUEUE_AT_ONCE chunks itself. At 0.6-0.8 ms a
# message, the 20,000 chunks of a 100,000-row job held it 12 s (bench/jobstart.py).
EnqueueRest = Callable[[int, int], None]
ENQUEUE_AT_ONCE = 40
QUEUE_UNREACHABLE = (
    "waiting for the task queue (Redis), which cannot be reached; the rows are sent when it is back"
)


class QueueUnreachable(Exception):
    """The broker did not take the messages (Redis down or unreachable)."""


def chunk_size(job: Job) -> int:
    return CHUNK_SIZES.get(job.kind, CHUNK_SIZE)


def chunk_priority(first_row: int) -> int:
    for last_row, priority in PRIORITY_UP_TO_ROW:
        if first_row <= last_row:
            return priority
    return LAST_PRIORITY


def items_enqueue(
    job: Job,
    *,
    enqueue: Enqueue,
    item_ids: Sequence[int] | None = None,
    enqueue_rest: EnqueueRest | None = None,
) -> int:
    """Send pending items of ``job`` to the workers in chunks, after commit.

    With ``enqueue_rest`` (a web request), only the first ENQUEUE_AT_ONCE
    chunks are sent here and a worker sends the others (items_enqueue_after).
    """
    now = timezone.now()
    qs = JobItem.objects.filter(job=job, status=ItemStatus.PENDING)
    if item_ids is not None:
        qs = qs.filter(pk__in=item_ids)
    rows = list(qs.order_by("row").values_list("pk", "row"))
    if not rows:
        return 0
    qs.update(queued_at=now)
    _send_chunks(job, rows, enqueue=enqueue, enqueue_rest=enqueue_rest)
    return len(rows)


def _send_chunks(
    job: Job,
    rows: list[tuple[int, int]],
    *,
    enqueue: Enqueue,
    enqueue_rest: EnqueueRest | None = None,
) -> None:
    """Chunk messages of ``rows`` (id, row number), in row order, after commit."""
    if not rows:
        return
    size = chunk_size(job)
    parts = [rows[i : i + size] for i in range(0, len(rows), size)]
    rest = enqueue_rest is not None and len(parts) > ENQUEUE_AT_ONCE
    if rest:
        parts = parts[:ENQUEUE_AT_ONCE]
    chunks = [
        Chunk([pk for pk, _ in part], job.queue, chunk_priority(part[0][1])) for part in parts
    ]
    last = parts[-1][-1][1]  # the row of the last id sent

    def send() -> None:
        try:
            enqueue(chunks)
            if rest:
                enqueue_rest(job.pk, last)
        except QueueUnreachable as exc:
            _unqueue(job, exc)

    transaction.on_commit(send)


def _unqueue(job: Job, exc: QueueUnreachable) -> None:
    """Messages that did not go out: the job's waiting rows are marked as never
    queued, so that the reconciler sends them at its first run once Redis is
    back (instead of after a lease), and the job says why it waits. The job and
    its rows are saved either way; whatever message did go out finds its rows
    taken or takes them, once."""
    JobItem.objects.filter(job=job, status=ItemStatus.PENDING).update(queued_at=None)
    Job.objects.filter(pk=job.pk).update(waiting_reason=QUEUE_UNREACHABLE)
    log.warning("job %s: its rows were not queued (%s); the reconciler sends them", job.pk, exc)


def items_enqueue_after(job_id: int, after_row: int, *, enqueue: Enqueue) -> int:
    """Send the chunks of the job's queued rows after ``after_row`` (the rest of
    an items_enqueue from a web request); rows taken meanwhile are left out."""
    job = Job.objects.filter(pk=job_id, status__in=ACTIVE_JOB_STATUSES).first()
    if job is None:
        return 0  # cancelled or paused meanwhile: resuming queues its rows again
    rows = list(
        JobItem.objects.filter(
            job=job, status=ItemStatus.PENDING, queued_at__isnull=False, row__gt=after_row
        )
        .order_by("row")
        .values_list("pk", "row")
    )
    _send_chunks(job, rows, enqueue=enqueue)
    return len(rows)
