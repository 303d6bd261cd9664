"""The life of a job item: queue, claim with a lease, record the outcome, reconcile.

Celery messages only carry item ids. A worker claims items with a conditional
UPDATE (pending -> running, with a lease token and expiry), so running a task
twice changes nothing. Attempts are counted at the claim: an item whose work
kills the worker again and again ends as failed instead of looping.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import F, Q
from django.utils import timezone

from pulls.jobs import queueing
from pulls.models import (
    ACTIVE_JOB_STATUSES,
    FINAL_ITEM_STATUSES,
    ItemStatus,
    Job,
    JobItem,
    JobStatus,
)

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What working one row produced: the item's counts, and the rows to save
    with them (``save``), in the same transaction as the item's outcome and its
    audit event."""

    counts: dict[str, int]
    save: Callable[[], None] | None = None


@dataclass
class Pending:
    """A row whose work on the association is done; ``finish`` does the rest
    (placing files, checking completeness) and returns its Outcome or raises.
    The runner finishes it while the next row's transfer goes on."""

    finish: Callable[[], Outcome]


def items_insert(
    job: Job,
    rows: Sequence[Mapping[str, str]],
    *,
    numbers: Sequence[int],
    expected: Sequence[int],
    sop_classes: Sequence[str] | None = None,
) -> None:
    """Save a job's items, one per row (its number in the file, its keys, the
    instances a find counted and of which SOP classes), every other column at
    the model's default.

    The columns come from the model, the values are prepared once per row:
    Django's bulk_create prepared each of the 21 fields of each object in
    Python, 3.7 s of the request that saves a 20,000-row file. PostgreSQL takes
    them with COPY (psycopg sent an executemany's rows one by one: 13.4 s for
    100,000 rows, 2.5 s now); SQLite with one INSERT and executemany
    (bench/jobstart.py).
    """
    fields = [field for field in JobItem._meta.concrete_fields if not field.primary_key]
    defaults = JobItem(job=job)
    base = [
        field.get_db_prep_save(getattr(defaults, field.attname), connection) for field in fields
    ]
    place = {field.name: n for n, field in enumerate(fields)}
    keys = JobItem._meta.get_field("identifier")
    values = []
    classes = sop_classes or [""] * len(rows)
    # In row order: the keys then sort as the rows do (selectors.MATCH_SORTS).
    in_order = sorted(zip(numbers, rows, expected, classes, strict=True), key=lambda r: r[0])
    for number, row, count, uids in in_order:
        one = list(base)
        one[place["row"]] = number
        one[place["identifier"]] = keys.get_db_prep_save(dict(row), connection)
        one[place["instances_expected"]] = count
        one[place["sop_classes"]] = uids
        values.append(one)
    quote = connection.ops.quote_name
    table = quote(JobItem._meta.db_table)
    columns = ", ".join(quote(field.column) for field in fields)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for one in values:
                    copy.write_row(one)
            return
        placeholders = ", ".join(["%s"] * len(fields))
        insert = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"  # noqa: S608
        for start in range(0, len(values), 5000):
            cursor.executemany(insert, values[start : start + 5000])


def lease_seconds() -> int:
    return settings.PACSNPULL_LEASE_SECONDS


def items_claim(
    item_ids: Sequence[int], *, worker: str, token: uuid.UUID | None = None
) -> tuple[uuid.UUID, list[JobItem]]:
    """Take the still-pending items among ``item_ids`` for this worker.

    Returns the lease token (``token`` when given: a chunk that takes more rows
    keeps one lease) and the claimed items (possibly none: another worker or an
    earlier delivery of the same message got them first).
    """
    token = token or uuid.uuid4()
    if not item_ids or not _any_pending(item_ids):
        # A message whose rows a worker going on with the job took already (most
        # of a job's messages): a read, without taking SQLite's write lock.
        return token, []
    now = timezone.now()
    with transaction.atomic():  # one write transaction, not three
        claimed = _claim(item_ids, worker=worker, token=token, now=now)
        if claimed:
            Job.objects.filter(pk=claimed[0].job_id, status=JobStatus.QUEUED).update(
                status=JobStatus.RUNNING, started_at=now
            )
        return token, claimed


def _by_id(table: str) -> str:
    """``table`` read or updated by a list of ids: without statistics, SQLite
    took the index on (status, lease expiry) for a ``status = %s AND id IN
    (...)`` and went through every pending row of every job (7-14 ms with
    100,000 pending); NOT INDEXED leaves it the lookups by id."""
    return f"{table} NOT INDEXED" if connection.vendor == "sqlite" else table


def _any_pending(item_ids: Sequence[int]) -> bool:
    table = _by_id(connection.ops.quote_name(JobItem._meta.db_table))
    ids = ", ".join(["%s"] * len(item_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE {_column('status')} = %s "  # noqa: S608
            f"AND {connection.ops.quote_name('id')} IN ({ids}) LIMIT 1",
            [ItemStatus.PENDING, *item_ids],
        )
        return cursor.fetchone() is not None


def _column(name: str) -> str:
    return connection.ops.quote_name(JobItem._meta.get_field(name).column)


@functools.lru_cache(maxsize=8)
def _claim_statements(vendor: str) -> tuple[str, str, str]:
    """The look for a job's next queued rows, the claim of rows by id and the
    read of the claimed rows (the last two completed by a list of ids, ``%s``
    each). Raw SQL built once: through the ORM a claim of a few rows was five
    queries and ~5 ms of a worker's CPU, more than the rows' own bookkeeping.
    Column and table names come from the models."""
    quote = connection.ops.quote_name
    item, job = quote(JobItem._meta.db_table), quote(Job._meta.db_table)
    ready = f"({_column('not_before')} IS NULL OR {_column('not_before')} <= %s)"
    active = ", ".join(["%s"] * len(ACTIVE_JOB_STATUSES))
    job_active = (
        f"EXISTS (SELECT 1 FROM {job} WHERE {job}.{quote('id')} = {item}.{_column('job')} "  # noqa: S608
        f"AND {job}.{quote('status')} IN ({active}))"
    )
    # On PostgreSQL the rows looked at stay locked and another worker's look
    # skips them; on SQLite the transaction holds the write lock from its start.
    skip_locked = connection.features.has_select_for_update_skip_locked
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
    # The status is written out, not a parameter: only then may the planners
    # take the index of the pending rows (JobItem.Meta.indexes).
    look = (
        f"SELECT {quote('id')} FROM {item} WHERE {_column('job')} = %s "  # noqa: S608
        f"AND {_column('status')} = '{ItemStatus.PENDING.value}' "
        f"AND {_column('queued_at')} IS NOT NULL AND {ready} "
        f"AND {job_active} ORDER BY {_column('row')} LIMIT %s{lock}"
    )
    claim = (
        f"UPDATE {_by_id(item)} SET {_column('status')} = %s, "  # noqa: S608
        f"{_column('attempts')} = {_column('attempts')} + 1, {_column('lease_token')} = %s, "
        f"{_column('lease_expires_at')} = %s, {_column('claimed_by')} = %s, "
        f"{_column('started_at')} = %s "
        f"WHERE {_column('status')} = %s AND {ready} AND {job_active} AND {quote('id')} IN "
    )
    # The rows of the list that hold the token are the ones just claimed (a
    # token is the chunk's own; its earlier rows are not in the list).
    columns = ", ".join(quote(field.column) for field in JobItem._meta.concrete_fields)
    read = (
        f"SELECT {columns} FROM {item} WHERE {_column('lease_token')} = %s "  # noqa: S608
        f"AND {quote('id')} IN "
    )
    return look, claim, read


# JobItem's fields in the order of _claim_statements' read of the claimed rows.
_ATTNAMES = [field.attname for field in JobItem._meta.concrete_fields]


@functools.lru_cache(maxsize=8)
def _converters(vendor: str) -> list[tuple[object, tuple]]:
    """Per column of that read: the expression and the database's and the
    field's converters of its value (what raw() looks up for every query)."""
    found = []
    for field in JobItem._meta.concrete_fields:
        column = field.get_col(JobItem._meta.db_table)
        found.append(
            (
                column,
                tuple(
                    connection.ops.get_db_converters(column) + field.get_db_converters(connection)
                ),
            )
        )
    return found


def _from_db(row: Sequence[object]) -> list[object]:
    values = []
    for value, (column, converters) in zip(row, _converters(connection.vendor), strict=True):
        for converter in converters:
            value = converter(value, column, connection)
        values.append(value)
    return values


def _prep(name: str, value: object) -> object:
    return JobItem._meta.get_field(name).get_db_prep_value(value, connection)


def _claim(item_ids: Sequence[int], *, worker: str, token: uuid.UUID, now) -> list[JobItem]:
    if not item_ids:
        return []
    claim = _claim_statements(connection.vendor)[1]
    moment = _prep("started_at", now)
    with connection.cursor() as cursor:
        cursor.execute(
            f"{claim}({', '.join(['%s'] * len(item_ids))})",
            [
                ItemStatus.RUNNING, _prep("lease_token", token),
                _prep("lease_expires_at", now + timedelta(seconds=lease_seconds())),
                worker[:200], moment, ItemStatus.PENDING, moment, *ACTIVE_JOB_STATUSES,
                *item_ids,
            ],
        )  # fmt: skip
        if not cursor.rowcount:
            return []
    # A raw read too, the rows made with from_db: a third of the CPU of raw()'s
    # (which looks up the columns and converters per query), a sixth of the ORM's.
    read = _claim_statements(connection.vendor)[2]
    with connection.cursor() as cursor:
        cursor.execute(
            f"{read}({', '.join(['%s'] * len(item_ids))}) ORDER BY {_column('row')}",
            [_prep("lease_token", token), *item_ids],
        )
        rows = cursor.fetchall()
    return [JobItem.from_db(connection.alias, _ATTNAMES, _from_db(row)) for row in rows]


def items_claim_next(
    job_id: int, *, token: uuid.UUID, worker: str, limit: int, whole_below: int = 0
) -> list[JobItem]:
    """Take up to ``limit`` more queued rows of the job, in row order, under
    ``token``: a worker that finished its chunk goes on with the rows that wait
    in the queue, on the association it holds. Their messages then find nothing
    to claim.

    The look and the claim are one transaction, so two workers going on with
    one job never reach for the same rows (see ``_claim_statements``).

    At the job's end (fewer than two chunks' worth left) it takes half of what
    is left: the rows are shared with the job's other workers instead of one
    of them working the last five while the others have nothing to do (+9 %
    for a 50-study C-GET on two workers, alternated). Fewer than
    ``whole_below`` rows left are taken together: where rows take less time
    than a claim (RowBatches.whole_below), halving down to the last row
    cost a claim per row.
    """
    now = timezone.now()
    look = _claim_statements(connection.vendor)[0]
    ready = _prep("not_before", now)
    if connection.vendor == "sqlite":
        # A look without the write lock first: at a job's end nothing is left,
        # and the claim waited for the lock behind the other workers' outcomes
        # only to find nothing (up to 5 ms at the end of a 104-row C-GET job,
        # traced), which the job's end waited for.
        with connection.cursor() as cursor:
            cursor.execute(look, [job_id, ready, *ACTIVE_JOB_STATUSES, 1])
            if cursor.fetchone() is None:
                return []
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(look, [job_id, ready, *ACTIVE_JOB_STATUSES, 2 * limit])
        ids = [row[0] for row in cursor.fetchall()]
        if whole_below <= len(ids) < 2 * limit:
            ids = ids[: (len(ids) + 1) // 2]
        return _claim(ids[:limit], worker=worker, token=token, now=now)


def lease_renew(token: uuid.UUID) -> None:
    """Keep the lease while a long chunk is still being worked on."""
    JobItem.objects.filter(lease_token=token, status=ItemStatus.RUNNING).update(
        lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds())
    )


def _finish(item: JobItem, token: uuid.UUID, **fields: object) -> bool:
    """Write an outcome only if this worker still holds the item's lease."""
    now = timezone.now()
    duration = None
    if item.started_at is not None:
        duration = int((now - item.started_at).total_seconds() * 1000)
    updated = JobItem.objects.filter(
        pk=item.pk, lease_token=token, status=ItemStatus.RUNNING
    ).update(
        lease_token=None,
        lease_expires_at=None,
        finished_at=now,
        duration_ms=duration,
        **fields,
    )
    if not updated:
        log.warning("item %s: lease lost before its outcome was recorded", item.pk)
    return bool(updated)


def item_succeed(item: JobItem, token: uuid.UUID, **counts: object) -> bool:
    return not items_succeed([(item, counts)], token)


# What an item's success sets besides its counts (which follow, by name).
_SUCCESS_FIELDS = (
    "status", "error_code", "error_message", "lease_token", "lease_expires_at", "finished_at",
    "duration_ms",
)  # fmt: skip


@functools.lru_cache(maxsize=32)
def _success_statement(vendor: str, counts: tuple[str, ...]) -> str:
    """The UPDATE of one item's success: _SUCCESS_FIELDS, then the counts, then the
    item's id, lease token and status. Built from the model's column names only
    (a count that is no JobItem field raises FieldDoesNotExist)."""
    quote = connection.ops.quote_name
    columns = [JobItem._meta.get_field(name).column for name in (*_SUCCESS_FIELDS, *counts)]
    assignments = ", ".join(f"{quote(column)} = %s" for column in columns)
    return (
        f"UPDATE {quote(JobItem._meta.db_table)} SET {assignments} "  # noqa: S608
        f"WHERE {quote('id')} = %s AND {quote('lease_token')} = %s AND {quote('status')} = %s"
    )


def items_succeed(
    finished: Sequence[tuple[JobItem, Mapping[str, int]]], token: uuid.UUID
) -> list[JobItem]:
    """Record several rows as done, each with its counts (numbers), where this
    worker still holds the lease; returns the rows whose lease was lost.

    An UPDATE per row from a statement built once (the ORM compiles every
    ``update()`` anew, which cost a worker more CPU than a small study's
    transfer bookkeeping, profiled with 30-instance studies), sent with
    executemany: one call for a batch of rows instead of one each (1.0 ->
    0.6 ms for 50 rows on SQLite). The rows updated are counted; only
    when some are missing are they looked for.
    """
    now = timezone.now()
    finished_at = JobItem._meta.get_field("finished_at").get_db_prep_save(now, connection)
    lease = JobItem._meta.get_field("lease_token").get_db_prep_value(token, connection)
    statements: dict[str, list[list[object]]] = {}
    for item, counts in finished:
        duration = None
        if item.started_at is not None:
            duration = int((now - item.started_at).total_seconds() * 1000)
        # In _SUCCESS_FIELDS order: no error, the lease given back.
        params = [ItemStatus.DONE, None, "", None, None, finished_at, duration]
        params += counts.values()
        params += [item.pk, lease, ItemStatus.RUNNING]
        statement = _success_statement(connection.vendor, tuple(counts))
        statements.setdefault(statement, []).append(params)
    updated = 0
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        for statement, rows in statements.items():
            cursor.executemany(statement, rows)
            updated += cursor.rowcount
        if updated >= len(finished):
            return []
        ours = set(
            JobItem.objects.filter(
                pk__in=[item.pk for item, _counts in finished],
                status=ItemStatus.DONE,
                finished_at=now,
            ).values_list("pk", flat=True)
        )
    lost = [item for item, _counts in finished if item.pk not in ours]
    for item in lost:
        log.warning("item %s: lease lost before its outcome was recorded", item.pk)
    return lost


def item_release(
    item: JobItem, token: uuid.UUID, *, not_before=None, requeued: bool = False
) -> bool:
    """Give an item back untouched (its job was paused, its node is held back):
    the attempt is not counted; with ``not_before`` it waits until then.

    ``requeued``: a message carries it again (a retry in seconds, when the
    node's association slots were all taken). It then counts as queued, so the
    worker that holds a slot for its job goes on with it (items_claim_next)
    instead of leaving it to the retry; otherwise it waits for the reconciler.
    """
    extra = {} if not_before is None else {"not_before": not_before}
    return _finish(
        item,
        token,
        status=ItemStatus.PENDING,
        attempts=F("attempts") - 1,
        queued_at=timezone.now() if requeued else None,
        **extra,
    )


def item_cancel(item: JobItem, token: uuid.UUID, **counts: object) -> bool:
    return _finish(
        item, token, status=ItemStatus.CANCELLED, error_message="cancelled by a user", **counts
    )


def item_fail(
    item: JobItem,
    token: uuid.UUID,
    *,
    message: str,
    code: int | None = None,
    retryable: bool,
    retry_in: int | None = None,
    **counts: object,
) -> bool:
    """Record a failure (with what was counted); a retryable one goes back to
    pending until its attempts run out."""
    if retryable and item.attempts < settings.PACSNPULL_MAX_ATTEMPTS:
        return _finish(
            item,
            token,
            **counts,
            status=ItemStatus.PENDING,
            error_code=code,
            error_message=f"attempt {item.attempts} failed, will retry: {message}",
            not_before=timezone.now()
            + timedelta(seconds=settings.PACSNPULL_RETRY_SECONDS if retry_in is None else retry_in),
            queued_at=None,
        )
    if retryable:
        message = f"gave up after {item.attempts} attempts: {message}"
    return _finish(
        item, token, status=ItemStatus.FAILED, error_code=code, error_message=message, **counts
    )


# A job's counters from its items: the rows of each status, and the sums of
# these columns over all of them. Read per status (GROUP BY) from the index on
# (job, status, row, ...) alone: a sum of CASE expressions per row took twice
# as long (50 ms for 100,000 rows; 25 ms now).
_COUNTED_STATUSES = (
    ItemStatus.PENDING, ItemStatus.RUNNING, ItemStatus.DONE, ItemStatus.FAILED,
    ItemStatus.CANCELLED,
)  # fmt: skip
_SUMMED = ("matches", "instances_expected", "instances_received", "bytes_received")
_COUNTERS = (
    "items_total",
    *(f"items_{status.value}" for status in _COUNTED_STATUSES),
    *_SUMMED,
)


@functools.lru_cache(maxsize=8)
def _refresh_statements(vendor: str) -> tuple[str, str, str]:
    """The lock of a job's row (PostgreSQL; empty where the transaction's start
    takes the write lock), the read of its counters, their UPDATE. Raw SQL built
    once from the models' names: a worker refreshes its job's counters every
    second, and the ORM compiled five queries anew each time."""
    quote = connection.ops.quote_name
    item, job = quote(JobItem._meta.db_table), quote(Job._meta.db_table)
    lock = (
        f"SELECT {quote('id')} FROM {job} WHERE {quote('id')} = %s FOR UPDATE"  # noqa: S608
        if connection.features.has_select_for_update
        else ""
    )
    sums = ", ".join(f"SUM({_column(name)})" for name in _SUMMED)
    read = (
        f"SELECT {_column('status')}, COUNT(*), {sums} FROM {item} "  # noqa: S608
        f"WHERE {_column('job')} = %s GROUP BY {_column('status')}"
    )
    columns = [Job._meta.get_field(name).column for name in _COUNTERS]
    update = (
        f"UPDATE {job} SET {', '.join(f'{quote(c)} = %s' for c in columns)} "  # noqa: S608
        f"WHERE {quote('id')} = %s"
    )
    return lock, read, update


def _counters(cursor: CursorWrapper, read: str, job_id: int) -> dict[str, int]:
    cursor.execute(read, [job_id])
    counters = dict.fromkeys(_COUNTERS, 0)
    for status, count, *sums in cursor.fetchall():
        counters["items_total"] += count
        if f"items_{status}" in counters:
            counters[f"items_{status}"] = count
        for name, value in zip(_SUMMED, sums, strict=True):
            counters[name] += value or 0
    return counters


def job_refresh_counters(job_id: int) -> None:
    """Recompute a job's counters from its items and close it when all are final.

    Refreshes of one job run one at a time (the job's row locked; on SQLite the
    write lock taken at BEGIN IMMEDIATE): two workers finishing together must not
    write their counts in the wrong order, which left a job "done" with the
    counts of a moment before.
    """
    lock, read, update = _refresh_statements(connection.vendor)
    with transaction.atomic(), connection.cursor() as cursor:
        if lock:
            cursor.execute(lock, [job_id])
        counters = _counters(cursor, read, job_id)
        cursor.execute(update, [*counters.values(), job_id])
        total = counters["items_total"]
        final = sum(counters[f"items_{status.value}"] for status in FINAL_ITEM_STATUSES)
        if total and final == total:
            status = JobStatus.FAILED if counters["items_failed"] else JobStatus.DONE
            Job.objects.filter(pk=job_id, status__in=ACTIVE_JOB_STATUSES).update(
                status=status, finished_at=timezone.now(), waiting_reason=""
            )


def items_reconcile(*, enqueue: queueing.Enqueue) -> dict[str, int]:
    """Repair what lost messages and dead workers left behind. Safe to run any time.

    - running items whose lease expired go back to pending, or to failed when
      they used up their attempts (a poison item that kills its worker);
    - pending items of active jobs that no message carries any more (never
      queued, or queued longer ago than a lease) are queued again;
    - job counters and final states are brought up to date.
    """
    now = timezone.now()
    max_attempts = settings.PACSNPULL_MAX_ATTEMPTS
    expired = JobItem.objects.filter(status=ItemStatus.RUNNING, lease_expires_at__lt=now)
    touched_jobs = set(expired.values_list("job_id", flat=True))
    lost = "the worker stopped or timed out while working on this item (its lease expired)"
    failed = expired.filter(attempts__gte=max_attempts).update(
        status=ItemStatus.FAILED,
        lease_token=None,
        lease_expires_at=None,
        finished_at=now,
        error_message=f"gave up after {max_attempts} attempts: {lost}",
    )
    released = expired.update(
        status=ItemStatus.PENDING,
        lease_token=None,
        lease_expires_at=None,
        queued_at=None,
        error_message=f"retrying: {lost}",
    )
    stale = now - timedelta(seconds=lease_seconds())
    orphans = JobItem.objects.filter(
        status=ItemStatus.PENDING, job__status__in=ACTIVE_JOB_STATUSES
    ).filter(
        Q(queued_at__isnull=True) | Q(queued_at__lt=stale),
        Q(not_before__isnull=True) | Q(not_before__lte=now),
    )
    requeued = 0
    for job_id in set(orphans.values_list("job_id", flat=True)):
        job = Job.objects.get(pk=job_id)
        requeued += queueing.items_enqueue(
            job,
            enqueue=enqueue,
            item_ids=list(orphans.filter(job_id=job_id).values_list("pk", flat=True)),
        )
        touched_jobs.add(job_id)
    active = Job.objects.filter(status__in=ACTIVE_JOB_STATUSES).values_list("pk", flat=True)
    for job_id in touched_jobs | set(active):
        job_refresh_counters(job_id)
    return {"failed": failed, "released": released, "requeued": requeued}
