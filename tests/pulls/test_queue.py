"""Items through the queue: leases, attempts, the reconciler, and a real worker."""

import json
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from pulls.jobs import items, queueing
from pulls.models import FindResult, ItemStatus, Job, JobItem, JobKind, JobStatus
from pulls.services import job_create
from pulls.workers.tasks import enqueue_chunks
from tests.conftest import make_node, wait_for


def _job(*, owner, project, node, rows) -> Job:
    """A job saved without being queued, as if its messages were lost."""
    job = Job.objects.create(
        kind=JobKind.FIND, owner=owner, project=project, node=node, status=JobStatus.QUEUED
    )
    JobItem.objects.bulk_create(
        JobItem(job=job, row=n, identifier=row) for n, row in enumerate(rows, 1)
    )
    return job


def _expire_leases(job: Job) -> None:
    """What time does to the lease of a worker that died."""
    JobItem.objects.filter(job=job, status=ItemStatus.RUNNING).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.fixture
def nowhere_node(db):
    return make_node("NOWHERE", 9, "NOWHERE")


def test_a_claim_takes_each_item_once(alice, project, nowhere_node):
    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}] * 3)
    ids = list(job.items.values_list("pk", flat=True))
    _, first = items.items_claim(ids, worker="w1")
    _, second = items.items_claim(ids, worker="w2")
    assert len(first) == 3
    assert second == []
    assert set(job.items.values_list("status", "attempts", "claimed_by")) == {
        (ItemStatus.RUNNING, 1, "w1")
    }


def test_a_claim_takes_no_row_of_a_stopped_job_nor_one_that_waits(alice, project, nowhere_node):
    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}] * 3)
    first, later, third = job.items.order_by("row")
    JobItem.objects.filter(pk=later.pk).update(not_before=timezone.now() + timedelta(minutes=5))
    Job.objects.filter(pk=job.pk).update(status=JobStatus.PAUSED)
    assert items.items_claim([first.pk], worker="w")[1] == []

    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    token, claimed = items.items_claim([first.pk, later.pk, third.pk], worker="w")

    assert [item.pk for item in claimed] == [first.pk, third.pk]
    assert [(i.status, i.attempts, i.lease_token) for i in claimed] == [
        (ItemStatus.RUNNING, 1, token)
    ] * 2
    assert JobItem.objects.get(pk=later.pk).status == ItemStatus.PENDING


def test_workers_going_on_take_the_next_queued_rows_in_order_each_once(
    alice, project, nowhere_node
):
    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}] * 7)
    rows = list(job.items.order_by("row"))
    JobItem.objects.filter(job=job).exclude(pk=rows[5].pk).update(queued_at=timezone.now())
    one, other = uuid.uuid4(), uuid.uuid4()

    taken = [items.items_claim_next(job.pk, token=t, worker="w", limit=2) for t in (one, other)]
    # The job's last rows (fewer than two chunks' worth): each takes half of them.
    rest = [items.items_claim_next(job.pk, token=t, worker="w", limit=5) for t in (one, other)]

    assert [[i.row for i in batch] for batch in taken] == [[1, 2], [3, 4]]
    # Row 6 has no message yet: its chunk will claim it.
    assert [[i.row for i in batch] for batch in rest] == [[5], [7]]
    assert set(job.items.filter(lease_token=one).values_list("row", flat=True)) == {1, 2, 5}
    assert items.items_claim_next(job.pk, token=one, worker="w", limit=5) == []


def test_where_rows_go_fast_the_last_few_are_taken_together(alice, project, nowhere_node):
    """Halving the job's last rows down to one row a claim costs a claim per
    row: where rows take less time than a claim, the last ones (fewer than
    ``whole_below``) go to one worker."""
    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}] * 9)
    JobItem.objects.filter(job=job).update(queued_at=timezone.now())
    one, other = uuid.uuid4(), uuid.uuid4()

    def rows(token: uuid.UUID, limit: int) -> list[int]:
        claimed = items.items_claim_next(
            job.pk, token=token, worker="w", limit=limit, whole_below=5
        )
        return [item.row for item in claimed]

    assert rows(one, 2) == [1, 2]
    assert rows(other, 5) == [3, 4, 5, 6]  # 7 left, fewer than two batches: half of them
    assert rows(one, 5) == [7, 8, 9]  # 3 left, fewer than whole_below: all of them
    assert rows(other, 5) == []


def test_an_outcome_is_recorded_only_while_the_worker_holds_the_lease(alice, project, nowhere_node):
    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}] * 2)
    ids = list(job.items.values_list("pk", flat=True))
    token, (kept, lost) = items.items_claim(ids, worker="w")
    _expire_leases(job)
    JobItem.objects.filter(pk=lost.pk).update(status=ItemStatus.PENDING, lease_token=None)

    gone = items.items_succeed([(kept, {"matches": 3}), (lost, {"matches": 4})], token)

    assert gone == [lost]
    kept.refresh_from_db()
    assert (kept.status, kept.matches, kept.lease_token, kept.error_message) == (
        ItemStatus.DONE, 3, None, "",
    )  # fmt: skip
    assert kept.finished_at is not None and kept.duration_ms is not None
    assert JobItem.objects.get(pk=lost.pk).status == ItemStatus.PENDING


def test_a_poison_item_ends_as_failed_after_the_set_attempts(
    alice, project, nowhere_node, settings, django_capture_on_commit_callbacks
):
    settings.PACSNPULL_MAX_ATTEMPTS = 3
    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}])
    item = job.items.get()
    queued: list[list[int]] = []
    for attempt in (1, 2, 3):
        _, claimed = items.items_claim([item.pk], worker=f"doomed-{attempt}")
        assert [i.pk for i in claimed] == [item.pk]
        _expire_leases(job)
        with django_capture_on_commit_callbacks(execute=True):
            items.items_reconcile(enqueue=lambda chunks: queued.extend(c.ids for c in chunks))
        item.refresh_from_db()
        if attempt < 3:
            assert item.status == ItemStatus.PENDING
            assert queued[-1] == [item.pk]
            assert "retrying" in item.error_message
    assert item.status == ItemStatus.FAILED
    assert item.attempts == 3
    assert item.error_message.startswith("gave up after 3 attempts")
    assert len(queued) == 2
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert (job.items_failed, job.items_total) == (1, 1)


def test_the_reconciler_leaves_live_leases_alone(
    alice, project, nowhere_node, django_capture_on_commit_callbacks
):
    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}])
    items.items_claim([job.items.get().pk], worker="alive")
    queued: list[list[int]] = []
    with django_capture_on_commit_callbacks(execute=True):
        counts = items.items_reconcile(enqueue=lambda chunks: queued.extend(c.ids for c in chunks))
    assert counts == {"failed": 0, "released": 0, "requeued": 0}
    assert queued == []
    assert job.items.get().status == ItemStatus.RUNNING


def _study_rows(dicom_data):
    return [
        {"QueryRetrieveLevel": "STUDY", "PatientID": pid, "StudyInstanceUID": "", "Modality": ""}
        for pid in sorted(dicom_data.patients)
    ]


def test_a_find_job_runs_on_a_real_worker(celery_worker, orthanc_node, alice, project, dicom_data):
    job = job_create(
        kind=JobKind.FIND, owner=alice, project=project, node=orthanc_node,
        rows=_study_rows(dicom_data), start=True,
    )  # fmt: skip
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status == JobStatus.DONE,
        timeout=60,
        what=f"the job to finish; worker log:\n{celery_worker.log_tail()}",
    )
    job.refresh_from_db()
    assert job.items_done == len(dicom_data.patients)
    found = set(FindResult.objects.filter(job=job).values_list("study_instance_uid", flat=True))
    assert found == set(dicom_data.studies)
    assert job.matches == len(dicom_data.studies)


def test_the_reconciler_requeues_an_expired_lease_and_a_worker_finishes_it(
    celery_worker, orthanc_node, alice, project, dicom_data
):
    job = _job(owner=alice, project=project, node=orthanc_node, rows=_study_rows(dicom_data)[:1])
    item = job.items.get()
    items.items_claim([item.pk], worker="died-mid-item")
    _expire_leases(job)
    items.items_reconcile(enqueue=enqueue_chunks)
    wait_for(
        lambda: JobItem.objects.get(pk=item.pk).status == ItemStatus.DONE,
        timeout=60,
        what=f"the re-queued item; worker log:\n{celery_worker.log_tail()}",
    )
    item.refresh_from_db()
    assert item.attempts == 2
    assert item.matches == 2  # two studies per generated patient
    assert item.claimed_by != "died-mid-item"


def test_a_worker_rechecks_access_before_sending_anything(alice, project, orthanc_node):
    from pulls.workers.runner import run_chunk

    job = _job(owner=alice, project=project, node=orthanc_node, rows=[{"PatientID": "1"}])
    orthanc_node.granted_users.remove(alice)
    assert "no longer granted" in run_chunk(list(job.items.values_list("pk", flat=True)))
    item = job.items.get()
    assert item.status == ItemStatus.FAILED
    assert item.error_message == "the node ORTHANC is no longer granted to alice"


def test_a_jobs_counters_add_up_its_rows(alice, project, nowhere_node):
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": str(n)} for n in range(6)]
    job = _job(owner=alice, project=project, node=nowhere_node, rows=rows)
    job.status = JobStatus.RUNNING
    job.save()
    outcomes = [
        (ItemStatus.PENDING, 0, 0, 0, 0), (ItemStatus.RUNNING, 0, 0, 0, 0),
        (ItemStatus.DONE, 3, 30, 30, 3000), (ItemStatus.DONE, 2, 20, 20, 2000),
        (ItemStatus.FAILED, 0, 10, 4, 400), (ItemStatus.CANCELLED, 0, 5, 1, 100),
    ]  # fmt: skip
    for row, (status, matches, expected, received, size) in enumerate(outcomes):
        job.items.filter(row=row + 1).update(
            status=status, matches=matches, instances_expected=expected,
            instances_received=received, bytes_received=size,
        )  # fmt: skip
    items.job_refresh_counters(job.pk)
    job.refresh_from_db()
    assert (
        job.items_total, job.items_pending, job.items_running, job.items_done,
        job.items_failed, job.items_cancelled,
    ) == (6, 1, 1, 2, 1, 1)  # fmt: skip
    assert (job.matches, job.instances_expected, job.instances_received, job.bytes_received) == (
        5, 65, 55, 5500,
    )  # fmt: skip
    assert job.status == JobStatus.RUNNING  # rows still to do
    job.items.filter(status__in=(ItemStatus.PENDING, ItemStatus.RUNNING)).update(
        status=ItemStatus.DONE
    )
    items.job_refresh_counters(job.pk)
    job.refresh_from_db()
    assert (job.status, job.items_done, job.items_failed) == (JobStatus.FAILED, 4, 1)


def test_two_refreshes_of_one_job_cannot_land_in_the_wrong_order(
    flushable_db, alice, project, monkeypatch
):
    """Worker A reads the counts, worker B finishes the last row and refreshes,
    then A writes: without the lock A's older counts would stay on a done job."""
    import threading

    from django.db import connection

    from tests.conftest import find_job

    node = make_node("RACE", 104, "RACE")
    node.granted_users.add(alice)
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": str(n)} for n in (1, 2)]
    job = find_job(alice, project, node, rows, start=False)
    job.items.update(status=ItemStatus.RUNNING)
    job.items.filter(row=1).update(status=ItemStatus.DONE, matches=3)
    job.status = JobStatus.RUNNING
    job.save()
    a_has_read, b_is_done = threading.Event(), threading.Event()
    real_counters = items._counters

    def slow_counters(*args, **kwargs):  # A pauses between its read and its write
        counters = real_counters(*args, **kwargs)
        if threading.current_thread().name == "A" and not a_has_read.is_set():
            a_has_read.set()
            b_is_done.wait(timeout=2)
        return counters

    monkeypatch.setattr(items, "_counters", slow_counters)

    def worker_a():
        try:
            items.job_refresh_counters(job.pk)
        finally:
            connection.close()

    def worker_b():
        a_has_read.wait(timeout=5)
        try:
            job.items.filter(row=2).update(status=ItemStatus.DONE, matches=4)
            items.job_refresh_counters(job.pk)
        finally:
            b_is_done.set()
            connection.close()

    threads = [threading.Thread(target=worker_a, name="A"), threading.Thread(target=worker_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert (job.items_done, job.items_running, job.matches) == (2, 0, 7)


def _messages(broker, queue: str) -> list[tuple[str, list]]:
    """(task name, arguments) of each message waiting on ``queue``, oldest first."""
    import base64
    import json

    found = []
    for raw in reversed(broker.lrange(queue, 0, -1)):  # pushed on the left, taken on the right
        message = json.loads(raw)
        args = json.loads(base64.b64decode(message["body"]))[0]
        found.append((message["headers"]["task"], args))
    return found


def test_a_big_job_is_started_with_its_first_chunks_and_a_worker_sends_the_rest(
    redis_url, alice, project, nowhere_node, monkeypatch, django_capture_on_commit_callbacks
):
    """Starting a job sends its first ENQUEUE_AT_ONCE chunks from the request,
    and one message for a worker to send the others (a 100,000-row job took
    the request 15 s of messages). Once that worker has run, every row is in
    exactly one chunk message, in row order."""
    import redis as redis_lib

    from pulls.services import job_start
    from pulls.workers import tasks

    monkeypatch.setitem(queueing.CHUNK_SIZES, "find", 2)
    monkeypatch.setattr(queueing, "ENQUEUE_AT_ONCE", 3)
    nowhere_node.granted_users.add(alice)
    rows = [{"QueryRetrieveLevel": "PATIENT", "PatientID": str(n)} for n in range(11)]
    job = job_create(kind=JobKind.FIND, owner=alice, project=project, node=nowhere_node, rows=rows)
    broker = redis_lib.Redis.from_url(redis_url)
    broker.delete(job.queue)  # what earlier tests left there
    with django_capture_on_commit_callbacks(execute=True):
        job_start(job=job, user=alice)
    sent = _messages(broker, job.queue)
    ids = list(job.items.order_by("row").values_list("pk", flat=True))
    assert sent == [
        ("pulls.tasks.run_items", [ids[0:2]]),
        ("pulls.tasks.run_items", [ids[2:4]]),
        ("pulls.tasks.run_items", [ids[4:6]]),
        ("pulls.tasks.queue_rest", [job.pk, 6]),
    ]
    with django_capture_on_commit_callbacks(execute=True):  # a worker: no transaction
        assert tasks.queue_rest(job.pk, 6) == f"job {job.pk}: 5 more rows queued"
    chunks = [args[0] for task, args in _messages(broker, job.queue) if task.endswith("run_items")]
    assert chunks == [ids[0:2], ids[2:4], ids[4:6], ids[6:8], ids[8:10], ids[10:]]
    assert set(job.items.values_list("status", flat=True)) == {ItemStatus.PENDING}


def test_a_saved_job_holds_each_row_once_with_its_number_keys_and_count(
    alice, project, nowhere_node
):
    """job_create writes its rows with one INSERT built from the model (a COPY
    on PostgreSQL): each row of the file, with its number there, its keys and
    the count a find gave it; every other column as a new item has it."""
    nowhere_node.granted_users.add(alice)
    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": f"1.2.3.{n}"} for n in range(3)]
    # What a text COPY (PostgreSQL) must escape, and quotes for SQL and JSON.
    rows[1]["PatientName"] = "tab\there, back\\slash, new\nline, 'single' \"double\" ü"
    job = job_create(
        kind=JobKind.GET, owner=alice, project=project, node=nowhere_node, rows=rows,
        row_numbers=[2, 5, 9], expected=[0, 7, 30],
    )  # fmt: skip
    saved = list(job.items.order_by("row"))
    assert [(i.row, i.identifier, i.instances_expected) for i in saved] == [
        (2, rows[0], 0), (5, rows[1], 7), (9, rows[2], 30),
    ]  # fmt: skip
    fresh = JobItem(job=job)
    for field in JobItem._meta.concrete_fields:
        if field.name not in ("id", "row", "identifier", "instances_expected"):
            assert {getattr(i, field.attname) for i in saved} == {getattr(fresh, field.attname)}
    assert (job.items_total, job.status) == (3, JobStatus.DRAFT)


def _handed_out(queue: str) -> list[tuple[str, list]]:
    """(task name, arguments) of every message on ``queue``, in the order Redis
    hands them to a worker (kombu reads a queue's priority lists 0, 3, 6, 9)."""
    from portal.celery import app

    taken = []
    with app.connection_for_read() as conn, conn.SimpleQueue(queue, no_ack=True) as simple:
        while True:
            try:
                message = simple.get(block=False)
            except simple.Empty:
                return taken
            taken.append((message.headers["task"], message.decode()[0]))


def test_a_job_started_behind_a_big_one_goes_ahead_of_its_later_rows(
    redis_url, alice, project, nowhere_node, monkeypatch, django_capture_on_commit_callbacks
):
    """A chunk's priority comes from its first row: a worker gets a small job's
    rows before the later rows of a big job started earlier (first come, first
    served, it waited for the whole big job), and each job's rows in order."""
    from pulls.services import job_start

    monkeypatch.setitem(queueing.CHUNK_SIZES, "find", 2)
    monkeypatch.setattr(queueing, "PRIORITY_UP_TO_ROW", ((4, 0), (8, 3)))
    nowhere_node.granted_users.add(alice)
    jobs = {}
    for name, count in (("big", 12), ("small", 3)):
        rows = [{"QueryRetrieveLevel": "PATIENT", "PatientID": f"{name}{n}"} for n in range(count)]
        jobs[name] = job_create(
            kind=JobKind.FIND, owner=alice, project=project, node=nowhere_node, rows=rows
        )
    queue = jobs["big"].queue
    _handed_out(queue)  # takes what earlier tests left there
    for job in jobs.values():
        with django_capture_on_commit_callbacks(execute=True):
            job_start(job=job, user=alice)
    rows_of = {
        pk: (name, row)
        for name, job in jobs.items()
        for pk, row in job.items.values_list("pk", "row")
    }
    order = [[rows_of[pk] for pk in args[0]] for _, args in _handed_out(queue)]
    assert order == [
        [("big", 1), ("big", 2)],
        [("big", 3), ("big", 4)],
        [("small", 1), ("small", 2)],
        [("small", 3)],
        [("big", 5), ("big", 6)],
        [("big", 7), ("big", 8)],
        [("big", 9), ("big", 10)],
        [("big", 11), ("big", 12)],
    ]


# What a worker's claims may read of the items table: rows by id, the lease
# token's rows, the pending rows of a job in order (either index of
# JobItem.Meta.indexes that begins with the job and holds the status).
_CLAIM_INDEXES = {"jobitem_pending", "jobitem_job_status_row", "jobitem_lease_token"}


def _jobitem_access(sql: str, params) -> list[str]:
    """How the database would read the items table for ``sql``: "scan", "id"
    (the primary key) or an index's name, from the planner's own plan."""
    from django.db import connection

    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            found = []
            for *_, line in cursor.fetchall():
                if " pulls_jobitem " not in f"{line} ":
                    continue
                if line.startswith("SCAN"):
                    found.append("scan")
                elif "INTEGER PRIMARY KEY" in line:
                    found.append("id")
                else:
                    found.append(line.split(" INDEX ")[1].split()[0])
            return found
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
    found = []

    def walk(node: dict) -> None:
        if node.get("Relation Name") == "pulls_jobitem" and node["Node Type"] == "Seq Scan":
            found.append("scan")
        name = node.get("Index Name")
        if name and name != "pulls_job_pkey":
            found.append("id" if name == "pulls_jobitem_pkey" else name)
        for child in node.get("Plans", ()):
            walk(child)

    walk(plan[0]["Plan"])
    return found


def test_a_claim_late_in_a_big_job_reads_only_the_rows_it_takes(alice, project, nowhere_node):
    """Claims and a message's check read rows by id and the job's pending rows,
    whatever the planner knows: with an index on (job, status), SQLite went
    through every row done before the next pending one, or every pending row
    of every job, on each claim (20 ms late in a 100,000-row job; PostgreSQL
    did the same with statistics from when the job had just started)."""
    from django.db import connection

    rows = 3000
    job = Job.objects.create(
        kind=JobKind.GET, owner=alice, project=project, node=nowhere_node,
        status=JobStatus.RUNNING,
    )  # fmt: skip
    items.items_insert(
        job, [{"StudyInstanceUID": f"1.2.3.{n}"} for n in range(rows)],
        numbers=range(1, rows + 1), expected=[1] * rows,
    )  # fmt: skip
    job.items.update(queued_at=timezone.now())
    if connection.vendor == "postgresql":  # statistics of the job's start
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE pulls_jobitem")
    job.items.filter(row__lte=rows - 10).update(status=ItemStatus.DONE, queued_at=None)
    done = list(job.items.filter(row__lte=5).values_list("pk", flat=True))
    seen: list[tuple[str, list[str]]] = []

    def explain(execute, sql, params, many, context):
        if sql.lstrip().upper().startswith(("SELECT", "UPDATE")) and "pulls_jobitem" in sql:
            seen.append((sql[:80], _jobitem_access(sql, params)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        claimed = items.items_claim_next(job.pk, token=uuid.uuid4(), worker="w", limit=5)
        _, stale = items.items_claim(done, worker="w")

    assert [item.row for item in claimed] == list(range(rows - 9, rows - 4))
    assert stale == []
    assert seen, "no statement seen"
    for statement, access in seen:
        assert access, (statement, "the plan names no access to the items table")
        assert set(access) <= _CLAIM_INDEXES | {"id"}, (statement, access)


def test_the_jobs_counters_move_while_a_chunk_works_without_holding_it_up(
    flushable_db, alice, project, nowhere_node
):
    """Live progress: the rows' finishing thread writes them and, when the
    chunk asks (every second), brings the job's counters up to date, while the
    chunk's own thread goes on with the next transfer."""
    from pulls.models import AuditAction
    from pulls.workers.outcomes import RowFinisher

    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}] * 3)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    token, claimed = items.items_claim(list(job.items.values_list("pk", flat=True)), worker="w")
    finisher = RowFinisher(job, token, AuditAction.FIND)
    try:
        for item in claimed[:2]:
            finisher.submit(item, items.Outcome({"matches": 4}))
        wait_for(
            lambda: job.items.filter(status=ItemStatus.DONE).count() == 2,
            timeout=60, what="the two rows written",
        )  # fmt: skip
        finisher.refresh_counters()
        counters = Job.objects.filter(pk=job.pk).values_list(
            "items_done", "items_running", "matches"
        )
        wait_for(
            lambda: counters.get() == (2, 1, 8), timeout=60, what="the job's counters refreshed"
        )
    finally:
        finisher.close()
    assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING  # a row is still running


def test_a_jobs_last_rows_are_written_as_soon_as_they_are_finished(
    flushable_db, alice, project, nowhere_node, monkeypatch
):
    """Rows finished while a job has many left wait to be written together
    (here an hour, to tell them apart); once the chunk found fewer rows than a
    chunk's worth (runner._more_rows), the finisher hurries: what it holds is
    written at once, and each later row as soon as it is finished. The job
    ends with its last transfer, not a batch later. (An hour here: the waits
    below give up after a minute, long before a batch would be due.)"""
    from pulls.models import AuditAction
    from pulls.workers import outcomes

    monkeypatch.setattr(outcomes, "_WRITE_WITHIN", 3600.0)
    job = _job(owner=alice, project=project, node=nowhere_node, rows=[{"PatientID": "1"}] * 3)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    token, claimed = items.items_claim(list(job.items.values_list("pk", flat=True)), worker="w")
    done = job.items.filter(status=ItemStatus.DONE)
    finisher = outcomes.RowFinisher(job, token, AuditAction.FIND)
    try:
        finisher.submit(claimed[0], items.Outcome({"matches": 1}))
        time.sleep(0.5)
        assert done.count() == 0, "a row was written before its batch was due"
        finisher.hurry()
        wait_for(lambda: done.count() == 1, timeout=60, what="the held row written at once")
        finisher.submit(claimed[1], items.Outcome({"matches": 2}))
        wait_for(lambda: done.count() == 2, timeout=60, what="the next row written as it came")
    finally:
        finisher.close()
    assert sorted(done.values_list("matches", flat=True)) == [1, 2]
