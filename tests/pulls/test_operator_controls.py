"""Operator controls: hourly retrieval limit, priorities, echo, audited changes, lockout."""

import threading

import pytest
from django.core.exceptions import PermissionDenied

from pulls.jobs import queueing
from pulls.limits import throttle
from pulls.models import (
    QUEUE_BULK,
    QUEUE_INTERACTIVE,
    AuditAction,
    AuditEvent,
    ItemStatus,
    Job,
    JobKind,
    JobStatus,
    Membership,
    Role,
)
from pulls.services import job_create, job_mark_urgent, node_echo
from pulls.workers.runner import run_chunk
from tests.conftest import SCP_PORT, Worker, find_job, make_node, retrieval_job, wait_for
from tests.pulls.scripted_pacs import ScriptedPacs


@pytest.fixture
def storage(settings, tmp_path, staging):
    settings.PACSNPULL_STORAGE_ROOT = tmp_path / "storage"
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    return settings.PACSNPULL_STORAGE_ROOT


def test_retrievals_per_hour_hold_the_next_study_back_and_say_until_when(
    storage, alice, project, dicom_data, settings
):
    studies = sorted(dicom_data.studies)[:2]
    files = [dicom_data.root / i.path for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        files,
        behaviour="honest",
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("HOURLY", pacs.port, pacs.ae_title, retrievals_per_hour=2)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, start=True)
        message = run_chunk(list(job.items.values_list("pk", flat=True)))
        assert pacs.moves == 1  # the second C-MOVE is due 30 minutes later
    job.refresh_from_db()
    first, second = job.items.order_by("row")
    assert first.status == ItemStatus.DONE
    assert (second.status, second.attempts) == (ItemStatus.PENDING, 0)
    assert 29 * 60 < (second.not_before - first.finished_at).total_seconds() <= 30 * 60 + 5
    assert job.waiting_reason.startswith("waiting: throttled: HOURLY allows 2 retrievals per hour")
    assert "next at" in job.waiting_reason
    assert "1 done" in message


def test_small_finds_and_urgent_jobs_go_to_the_interactive_queue(operator, alice, project):
    node = make_node("Q", 104, "Q")
    node.granted_users.add(alice)
    small = find_job(alice, project, node)
    big = retrieval_job(alice, project, node, ["1.2.3"], start=True)
    assert (small.queue, big.queue) == (QUEUE_INTERACTIVE, QUEUE_BULK)
    with pytest.raises(PermissionDenied, match="Only operators"):
        job_mark_urgent(job=big, user=alice)
    job_mark_urgent(job=big, user=operator)
    big.refresh_from_db()
    assert big.urgent and big.queue == QUEUE_INTERACTIVE
    assert AuditEvent.objects.filter(action=AuditAction.JOB_URGENT, job=big).exists()


def test_interactive_work_gets_the_next_free_slot_before_bulk_work(alice):
    node = make_node("PRIO", 104, "PRIO", max_associations=1)
    bulk = throttle.association_slot(node, ttl=30)
    assert bulk is not None
    assert throttle.association_slot(node, ttl=30, interactive=True) is None  # waits, marks
    bulk.release()
    assert throttle.association_slot(node, ttl=30) is None  # bulk steps aside
    interactive = throttle.association_slot(node, ttl=30, interactive=True)
    assert interactive is not None
    interactive.release()
    assert throttle.association_slot(node, ttl=30) is not None  # and then takes its turn


def test_a_small_find_is_not_stuck_behind_a_big_retrieval(
    flushable_db, sandbox, staging, settings, tmp_path, monkeypatch, alice, project, dicom_data
):
    """Two real workers as `make run` starts them (one serves the interactive queue
    only); the node allows one association, a slow retrieval job holds it. The
    small find is done while the retrieval still has studies to go: the bulk
    worker let the node's slot go between two of its studies.

    The PACS starts each of the retrieval's studies after its first only while
    interactive work waits for the node (throttle.interactive_waiting), so the
    retrieval cannot simply run out before the find has come, however the
    machine schedules the workers; a retrieval that did not step aside would
    go on through all its studies (the find re-marks the node as it retries)."""
    monkeypatch.setitem(queueing.CHUNK_SIZES, "move", 1)
    studies = sorted(dicom_data.studies)
    files = [dicom_data.root / i.path for uid in studies for i in dicom_data.studies[uid]]
    env = {
        "PACSNPULL_STAGING_DIR": str(staging),
        "PACSNPULL_STORAGE_ROOT": str(tmp_path / "storage"),
        "PACSNPULL_ARRIVAL_WAIT_SECONDS": "1",
    }
    workers = [
        Worker(
            redis_url=settings.REDIS_URL,
            log_path=sandbox / f"priority-{queues}.log",
            env=env,
            concurrency=1,
            queues=queues,
        )
        for queues in ("interactive,bulk", "interactive")
    ]
    over = threading.Event()
    with ScriptedPacs(
        files,
        behaviour="slow",
        delay=0.1,
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("BUSY", pacs.port, pacs.ae_title, max_associations=1)
        node.granted_users.add(alice)
        pacs.pause = lambda number, index, event: (
            number > 1
            and index == 0
            and ScriptedPacs.until(lambda: over.is_set() or throttle.interactive_waiting(node))
        )
        for worker in workers:
            worker.start()
        try:
            big = retrieval_job(alice, project, node, studies, start=True)
            wait_for(
                lambda: big.items.filter(status=ItemStatus.DONE).exists(),
                timeout=60,
                what="the retrieval to get going",
            )
            small = job_create(
                kind=JobKind.FIND,
                owner=alice,
                project=project,
                node=node,
                rows=[{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": studies[-1]}],
                start=True,
            )
            wait_for(
                lambda: Job.objects.get(pk=small.pk).status == JobStatus.DONE,
                timeout=120,
                what=f"the small find; log:\n{workers[1].log_tail()}",
            )
            still_going = big.items.exclude(status=ItemStatus.DONE).count()
        finally:
            over.set()
            for worker in workers:
                worker.stop()
    assert still_going > 0  # the retrieval was still going
    assert Job.objects.get(pk=small.pk).matches == 1


def test_a_job_started_behind_a_long_one_gets_its_turn(
    flushable_db, sandbox, settings, monkeypatch, orthanc, alice, project
):
    """One real worker, a find of 150 rows that takes 7.5 s (its node allows
    1,200 queries a minute) and, started just after it, a find of one row. Once
    the long job has had its turn (PACSNPULL_TURN_SECONDS, 1 s here; the worker
    goes on by 50 rows at a time), the worker takes the short job's row: its
    first rows go ahead of the long job's later ones. First come, first served,
    it waited for the whole long job."""
    # The messages are sent from here (job_start), so their chunks and
    # priorities are set here; the turn is the worker's.
    monkeypatch.setitem(queueing.CHUNK_SIZES, "find", 2)
    monkeypatch.setattr(queueing, "PRIORITY_UP_TO_ROW", ((2, 0),))
    node = make_node("TURNS", orthanc.dicom_port, orthanc.aet, queries_per_minute=1200)
    node.granted_users.add(alice)
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": f"NOBODY{n}"} for n in range(150)]
    long = find_job(alice, project, node, rows, start=True)
    short = find_job(alice, project, node, start=True)
    # Both are queued before the worker takes anything (first the long job's
    # first chunk, then the short one's), however slowly this test gets to the
    # second job_start on a busy machine.
    worker = Worker(
        redis_url=settings.REDIS_URL,
        log_path=sandbox / "turns.log",
        env={"PACSNPULL_TURN_SECONDS": "1"},
        concurrency=1,
    ).start()
    try:
        wait_for(
            lambda: Job.objects.get(pk=short.pk).status == JobStatus.DONE,
            timeout=120,
            what=f"the short find; log:\n{worker.log_tail()}",
        )
    finally:
        worker.stop()
    # The long job's rows done before the short one was (by the rows' own
    # times, not by when this test looked): its first chunk and one turn's
    # worth (2 + 50 rows), not all 150.
    short_done = short.items.get().finished_at
    before = long.items.filter(status=ItemStatus.DONE, finished_at__lte=short_done).count()
    assert before <= 52, before


def test_echo_never_waits_for_the_limits_but_a_suspended_node_is_left_alone(orthanc, operator):
    node = make_node("ECHO", orthanc.dicom_port, orthanc.aet, max_associations=1)
    held = throttle.association_slot(node, ttl=600)  # every slot taken by a job
    try:
        message = node_echo(node=node, user=operator)
        assert node.last_echo_ok, message
        # Sent while the job's slot was held (for ten minutes yet): the echo
        # neither waited for it to expire nor took a slot of its own.
        assert throttle.slots_in_use(node) == 1
        assert throttle.association_slot(node, ttl=600) is None
    finally:
        held.release()
    node.suspended = True
    node.save()
    assert node_echo(node=node, user=operator) == "not sent: ECHO is suspended by an operator"
    event = AuditEvent.objects.filter(action=AuditAction.ECHO).first()
    assert (event.success, event.node) == (False, node)


def test_node_limit_and_grant_changes_in_the_admin_are_audited(client, operator, alice):
    node = make_node("AUDITED", 104, "AUDITED")
    client.force_login(operator)
    page = client.get(f"/admin/pulls/pacsnode/{node.pk}/change/")
    form = page.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form.initial.get(name, field.initial)
        if value is None:
            continue
        if name in ("granted_users", "granted_groups"):
            data[name] = [v.pk if hasattr(v, "pk") else v for v in value]
        elif isinstance(value, bool):
            if value:
                data[name] = "on"
        else:
            data[name] = value
    data.update(max_associations=3, allowed_windows="Sat-Sun", granted_users=[alice.pk])
    response = client.post(f"/admin/pulls/pacsnode/{node.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    change = AuditEvent.objects.filter(action=AuditAction.NODE_CHANGED, node=node).first()
    assert change.actor == operator and change.actor_label == "olivia"
    assert change.details["changed"]["max_associations"] == [2, 3]
    assert change.details["changed"]["allowed_windows"] == ["", "Sat-Sun"]
    assert "limits changed" in change.target
    grant = AuditEvent.objects.filter(action=AuditAction.PERMISSION_CHANGED, node=node).first()
    assert grant.actor == operator
    assert grant.target == "node AUDITED granted to users alice"


def test_membership_changes_are_audited_with_the_project(alice, charlie, project):
    membership = Membership.objects.create(project=project, user=charlie, role=Role.VIEWER)
    membership.role = Role.MEMBER
    membership.save()
    membership.delete()
    targets = list(
        AuditEvent.objects.filter(action=AuditAction.PERMISSION_CHANGED, project=project)
        .order_by("id")
        .values_list("target", flat=True)
    )
    assert targets[-3:] == [
        "charlie joined Lung study as viewer",
        "charlie in Lung study: viewer -> member",
        "charlie removed from Lung study",
    ]


def test_logins_lock_after_repeated_failures_even_with_the_right_password(client, alice, bob):
    for _ in range(5):
        response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert response.status_code in (200, 429)
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "alice-password-1"}
    )
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert "Try again in 15 minutes" in page
    assert "_auth_user_id" not in client.session
    failed = AuditEvent.objects.filter(action=AuditAction.LOGIN_FAILED, target="alice").count()
    assert failed >= 5
    # Another username from the same address is not locked out.
    response = client.post("/accounts/login/", {"username": "bob", "password": "bob-password-1"})
    assert response.status_code == 302


def test_a_chunk_goes_to_its_queue_only(redis_url):
    """Each queue has its own routing key: an interactive chunk is not also
    delivered to the bulk workers (nor the other way round)."""
    import redis as redis_lib

    from pulls.jobs.queueing import Chunk
    from pulls.workers.tasks import enqueue_chunks

    broker = redis_lib.Redis.from_url(redis_url)
    before = {q: broker.llen(q) for q in (QUEUE_INTERACTIVE, QUEUE_BULK)}
    # No such items: a worker would do nothing.
    enqueue_chunks(
        [Chunk([-1], QUEUE_INTERACTIVE, 0), Chunk([-2], QUEUE_BULK, 0), Chunk([-3], QUEUE_BULK, 0)]
    )
    after = {q: broker.llen(q) for q in (QUEUE_INTERACTIVE, QUEUE_BULK)}
    assert after[QUEUE_INTERACTIVE] - before[QUEUE_INTERACTIVE] == 1
    assert after[QUEUE_BULK] - before[QUEUE_BULK] == 2
