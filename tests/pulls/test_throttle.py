"""Per-node limits hold across worker processes (counted on the PACS side)."""

import time
from types import SimpleNamespace

import pytest
from django.db import connection

from pulls.jobs import queueing
from pulls.limits import throttle
from pulls.models import ItemStatus, Job, JobKind, JobStatus, RetrievedInstance
from pulls.services import job_create
from pulls.workers.runner import run_chunk
from tests.conftest import SCP_PORT, Worker, find_job, make_node, retrieval_job, wait_for
from tests.pulls.scripted_pacs import ScriptedPacs


@pytest.fixture
def shared_redis(redis_url):
    return redis_url  # conftest points the limits at the test Redis for every test


class _Clock:
    """The limits' clock (the times they keep in Redis are the takers'), set by
    the test: what happens at a moment does not depend on when the test gets
    there on a busy machine."""

    def __init__(self, monkeypatch, now: float) -> None:
        self.now = now
        monkeypatch.setattr(
            throttle,
            "time",
            SimpleNamespace(time=lambda: self.now, monotonic=time.monotonic, sleep=time.sleep),
        )


@pytest.fixture
def clock(monkeypatch) -> _Clock:
    return _Clock(monkeypatch, time.time())


def test_four_workers_never_open_more_associations_than_the_node_allows(
    shared_redis, flushable_db, sandbox, staging, settings, tmp_path, monkeypatch, alice, project,
    dicom_data,
):  # fmt: skip
    monkeypatch.setitem(queueing.CHUNK_SIZES, "move", 1)  # one study per task: 8 tasks at once
    storage = tmp_path / "storage"
    studies = sorted(dicom_data.studies)
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    reasons = []
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="slow",
        delay=0.03,
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("CAPPED", pacs.port, pacs.ae_title, max_associations=2)
        node.granted_users.add(alice)
        job = None

        def limit_reached() -> bool:
            """Both slots in use and a third chunk sent away for it (the job says so)."""
            if pacs.open_associations < 2:
                return False
            try:
                reason = Job.objects.get(pk=job.pk).waiting_reason
            finally:
                connection.close()
            if reason.startswith("waiting: throttled"):
                reasons.append(reason)
            return bool(reasons)

        # Every C-MOVE waits, before its first instance, until the limit has
        # been reached (a minute at most): the workers meet it however the
        # machine schedules them; without the wait one could take the job's
        # rows alone, on one association.
        pacs.pause = lambda number, index, event: index == 0 and ScriptedPacs.until(limit_reached)
        worker = Worker(
            redis_url=shared_redis,
            log_path=sandbox / "throttle-worker.log",
            env={
                "PACSNPULL_STAGING_DIR": str(staging),
                "PACSNPULL_STORAGE_ROOT": str(storage),
                "PACSNPULL_ARRIVAL_WAIT_SECONDS": "1",
            },
            concurrency=4,
        ).start()
        try:
            job = retrieval_job(alice, project, node, studies, start=True)
            wait_for(
                lambda: Job.objects.get(pk=job.pk).status == JobStatus.DONE,
                timeout=120,
                what=f"the job; log:\n{worker.log_tail()}",
            )
        finally:
            worker.stop()
    assert pacs.max_open_associations == 2  # the limit was reached, never passed
    assert any(r.startswith("waiting: throttled: node CAPPED allows 2") for r in reasons)
    assert RetrievedInstance.objects.filter(project=project).count() == len(instances)
    assert throttle.slots_in_use(node) == 0


def test_a_suspended_node_receives_nothing(alice, project, dicom_data, settings):
    with ScriptedPacs(
        [dicom_data.root / dicom_data.instances[0].path],
        behaviour="honest",
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("OFF", pacs.port, pacs.ae_title, suspended=True)
        node.granted_users.add(alice)
        job = find_job(alice, project, node, start=True)
        message = run_chunk(list(job.items.values_list("pk", flat=True)))
        assert pacs.associations == 0
    job.refresh_from_db()
    assert "suspended by an operator" in message
    assert job.waiting_reason == "waiting: node OFF is suspended by an operator"
    assert set(job.items.values_list("status", "attempts")) == {(ItemStatus.PENDING, 0)}


def test_a_slot_held_by_a_dead_worker_frees_itself(shared_redis, alice, clock):
    node = make_node("ONE", 104, "ONE", max_associations=1)
    held = throttle.association_slot(node, ttl=1.5)  # its holder "dies": never released
    assert held is not None
    clock.now += 1.4
    assert throttle.association_slot(node, ttl=1.5) is None
    clock.now += 0.2  # past its expiry
    again = throttle.association_slot(node, ttl=1.5)
    assert again is not None
    again.release()
    assert throttle.slots_in_use(node) == 0


def test_sixty_queries_a_minute_shared_by_two_worker_processes_never_go_faster(
    redis_url, flushable_db, sandbox, settings, alice, project, dicom_data
):
    """Two worker processes share one budget: 60 a minute, whoever sends. Checked
    over a minute of queries from the PACS's side: N queries need N slots a
    second apart, the first no earlier than the job's start, so they cannot all
    have arrived in less than N - 1 seconds (two budgets would send them in
    half that). A busy machine only sends them later. That the limiter gives
    out every slot of the minute is test_query_slots_go_to_the_workers_in_the_
    order_they_asked's (how many queries a loaded machine then gets through is
    a benchmark's measure)."""
    queries = 60
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": f"P{n:04d}"} for n in range(400)]
    with ScriptedPacs(
        [dicom_data.root / dicom_data.instances[0].path],
        behaviour="honest",
        destinations={},
    ) as pacs:
        node = make_node("RATED", pacs.port, pacs.ae_title, queries_per_minute=60)
        node.granted_users.add(alice)
        worker = Worker(
            redis_url=redis_url,
            log_path=sandbox / "rate-worker.log",
        ).start()
        try:
            started = time.time()  # the limiter's clock: no slot of the job is earlier
            job = job_create(
                kind=JobKind.FIND, owner=alice, project=project, node=node, rows=rows, start=True
            )
            wait_for(
                lambda: pacs.finds >= queries,
                timeout=240,
                what=f"{queries} queries; log:\n{worker.log_tail()}",
            )
            sent, elapsed = pacs.finds, time.time() - started
            reason = Job.objects.get(pk=job.pk).waiting_reason
            from pulls.services import job_cancel

            job_cancel(job=job, user=alice)
        finally:
            worker.stop()
    assert sent <= elapsed + 1, (sent, elapsed)  # one a second at most, the first at once
    assert reason == "throttled: RATED allows 60 queries per minute"


def test_a_worker_killed_while_holding_a_slot_frees_it_within_the_slot_expiry(
    shared_redis, flushable_db, sandbox, staging, settings, tmp_path, alice, project, dicom_data,
    monkeypatch,
):  # fmt: skip
    """A real worker, SIGKILLed in the middle of a C-MOVE: nobody releases its
    slot, which expires with the lease it was taken for (3 s here): it is
    free for the next chunk a lease after the kill at the latest. (When is read
    from the slot itself, not from when this test gets to look.)"""
    lease = 3
    studies = sorted(dicom_data.studies)[:1]
    files = [dicom_data.root / i.path for i in dicom_data.studies[studies[0]]]
    with ScriptedPacs(
        files,
        behaviour="slow",
        delay=1.0,  # one instance a second: the transfer lasts long enough to kill it
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("KILLED", pacs.port, pacs.ae_title, max_associations=1)
        node.granted_users.add(alice)
        worker = Worker(
            redis_url=shared_redis,
            log_path=sandbox / "killed-slot-worker.log",
            env={
                "PACSNPULL_STAGING_DIR": str(staging),
                "PACSNPULL_STORAGE_ROOT": str(tmp_path / "storage"),
                "PACSNPULL_LEASE_SECONDS": str(lease),
            },
        ).start()
        try:
            retrieval_job(alice, project, node, studies, start=True)
            wait_for(lambda: pacs.open_associations == 1, timeout=60, what="the C-MOVE")
            worker.kill()
            killed = time.time()
            ((holder, expires),) = throttle._client().zrange(
                throttle._key(node), 0, -1, withscores=True
            )
        finally:
            worker.stop()
    # Taken (or last renewed) before the kill, for a lease: nobody renews it now.
    assert expires <= killed + lease, expires - killed
    clock = _Clock(monkeypatch, expires - 0.01)
    assert throttle.slots_in_use(node) == 1  # nobody released it
    assert throttle.association_slot(node, ttl=lease) is None
    clock.now = expires + 0.01
    assert throttle.slots_in_use(node) == 0
    # And the next chunk may take it at once.
    slot = throttle.association_slot(node, ttl=lease)
    assert slot is not None
    slot.release()


def test_suspending_a_node_stops_a_transfer_in_flight(
    flushable_db, staging, settings, tmp_path, alice, project, dicom_data
):
    """'Stops all traffic at once': the node is suspended while its C-MOVE is
    under way (after the study's first instance); the C-MOVE is cancelled
    before the study is through, its rows wait (no attempt used) and the job
    says why. The PACS sends the next instance once the node is suspended,
    more than the worker's half second between looks later (StallGuard), and
    no further one before the C-CANCEL has come (a minute at most): however
    slow the machine, the cancel must come from the suspension."""
    from pulls.models import PacsNode
    from pulls.retrieval.guard import StallGuard

    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_STORAGE_ROOT = tmp_path / "storage"
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    studies = sorted(dicom_data.studies)[:2]
    files = [dicom_data.root / i.path for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        files,
        behaviour="slow",
        delay=1.0,
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("STOPME", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, start=True)

        cancelled_after = []  # how many instances the PACS had sent

        def suspend_mid_study(number: int, index: int, event) -> None:
            if index == 1:
                try:
                    PacsNode.objects.filter(pk=node.pk).update(suspended=True)
                finally:
                    connection.close()
                time.sleep(StallGuard(0).check_every + 0.1)  # a lower bound only
            elif index == 2:
                ScriptedPacs.until(lambda: pacs.cancel_came(event))
            if pacs.cancel_came(event):  # it sends no more
                cancelled_after.append(index)

        pacs.pause = suspend_mid_study
        message = run_chunk(list(job.items.values_list("pk", flat=True)))
    job.refresh_from_db()
    first_study = len(dicom_data.studies[studies[0]])
    assert first_study >= 5
    # Cancelled with the response to the first or the second instance (the
    # worker may have looked at the first one's after the suspension).
    assert cancelled_after in ([1], [2]), cancelled_after
    assert pacs.moves == 1
    assert job.waiting_reason == "waiting: node STOPME is suspended by an operator"
    assert set(job.items.values_list("status", "attempts")) == {(ItemStatus.PENDING, 0)}
    assert "deferred" in message or "0 done" in message


def _about(expected):
    # Redis keeps the times as Lua prints them (14 digits): about 10 µs here.
    return pytest.approx(expected, abs=1e-3)


def test_query_slots_go_to_the_workers_in_the_order_they_asked(shared_redis, db, clock):
    """Each taker reserves the next slot: a worker that asked first is never
    overtaken by one that asks again and again (one of a job's two workers
    waited 3 s at 120 queries a minute while the other sent five). Every slot
    of the minute is given out: none is skipped."""
    node = make_node("TURNS", 104, "TURNS", queries_per_minute=600)  # one every 0.1 s
    first, second, third = (throttle.query_token(node) for _ in range(3))
    assert (first.taken, second.taken, third.taken) == (True, True, True)
    assert first.wait == _about(0)
    assert second.wait == _about(0.1)
    assert third.wait == _about(0.2)
    clock.now += 0.25  # a taker asking meanwhile gets the next slot, not a later one
    assert throttle.query_token(node).wait == _about(0.05)
    clock.now += 60  # no burst after a quiet minute: the next now, then a slot later
    assert [throttle.query_token(node).wait for _ in range(2)] == _about([0, 0.1])


def test_a_retrieval_slot_further_than_the_horizon_is_left_for_later(shared_redis, db, clock):
    node = make_node("HORIZON", 104, "HORIZON", retrievals_per_hour=3600)  # one a second
    assert throttle.retrieval_token(node, horizon=5).taken  # the first: now
    later = throttle.retrieval_token(node, horizon=0.5)  # a second away: the item is deferred
    assert not later.taken and later.wait == _about(1)
    kept = throttle.retrieval_token(node, horizon=5)  # so the slot is still there
    assert kept.taken and kept.wait == _about(1)
