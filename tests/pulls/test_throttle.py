"""Per-node limits hold across worker processes (counted on the PACS side)."""

import time

import pytest

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


def test_four_workers_never_open_more_associations_than_the_node_allows(
    shared_redis, flushable_db, sandbox, staging, settings, tmp_path, monkeypatch, alice, project,
    dicom_data,
):  # fmt: skip
    monkeypatch.setitem(queueing.CHUNK_SIZES, "move", 1)  # one study per task: 8 tasks at once
    storage = tmp_path / "storage"
    studies = sorted(dicom_data.studies)
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="slow",
        delay=0.03,
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("CAPPED", pacs.port, pacs.ae_title, max_associations=2)
        node.granted_users.add(alice)
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
        reasons = set()
        try:
            job = retrieval_job(alice, project, node, studies, start=True)

            def finished() -> bool:
                current = Job.objects.get(pk=job.pk)
                reasons.add(current.waiting_reason)
                return current.status == JobStatus.DONE

            wait_for(finished, timeout=120, what=f"the job; log:\n{worker.log_tail()}")
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


def test_a_slot_held_by_a_dead_worker_frees_itself(shared_redis, alice):
    node = make_node("ONE", 104, "ONE", max_associations=1)
    held = throttle.association_slot(node, ttl=1.5)  # its holder "dies": never released
    assert held is not None
    assert throttle.association_slot(node, ttl=1.5) is None
    time.sleep(1.6)
    again = throttle.association_slot(node, ttl=1.5)
    assert again is not None
    again.release()
    assert throttle.slots_in_use(node) == 0


def test_sixty_queries_a_minute_for_two_minutes_is_120_queries(
    redis_url, flushable_db, sandbox, settings, alice, project, dicom_data
):
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
            job = job_create(
                kind=JobKind.FIND, owner=alice, project=project, node=node, rows=rows, start=True
            )
            wait_for(lambda: pacs.finds > 0, timeout=30, what="the first query")
            started = time.monotonic()
            time.sleep(120)
            sent = pacs.finds
            elapsed = time.monotonic() - started
            reason = Job.objects.get(pk=job.pk).waiting_reason
            from pulls.services import job_cancel

            job_cancel(job=job, user=alice)
        finally:
            worker.stop()
    # Two worker processes share one budget: 60 a minute, 120 in two minutes.
    assert 114 <= sent <= 127, (sent, elapsed)
    assert reason == "throttled: RATED allows 60 queries per minute"


def test_a_worker_killed_while_holding_a_slot_frees_it_within_the_slot_expiry(
    shared_redis, flushable_db, sandbox, staging, settings, tmp_path, alice, project, dicom_data
):
    """A real worker, SIGKILLed in the middle of a C-MOVE: nobody releases its
    slot, which expires with the lease it was taken for (3 s here)."""
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
                "PACSNPULL_LEASE_SECONDS": "3",
            },
        ).start()
        try:
            retrieval_job(alice, project, node, studies, start=True)
            wait_for(lambda: pacs.open_associations == 1, timeout=30, what="the C-MOVE")
            assert throttle.slots_in_use(node) == 1
            worker.kill()
            killed = time.monotonic()
            wait_for(
                lambda: throttle.slots_in_use(node) == 0, timeout=10, what="the slot to expire"
            )
            freed_after = time.monotonic() - killed
        finally:
            worker.stop()
    assert freed_after <= 3.5, freed_after
    # And the next chunk may take it at once.
    slot = throttle.association_slot(node, ttl=3)
    assert slot is not None
    slot.release()


def test_suspending_a_node_stops_a_transfer_in_flight(
    flushable_db, staging, settings, tmp_path, alice, project, dicom_data
):
    """'Stops all traffic at once': the C-MOVE under way is cancelled within a
    second, its rows wait (no attempt used) and the job says why."""
    import threading

    from pulls.models import PacsNode

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
        timer = threading.Timer(
            1.0, lambda: PacsNode.objects.filter(pk=node.pk).update(suspended=True)
        )
        timer.start()
        started = time.monotonic()
        message = run_chunk(list(job.items.values_list("pk", flat=True)))
        took = time.monotonic() - started
        timer.join()
    job.refresh_from_db()
    first_study = len(dicom_data.studies[studies[0]])  # a second per instance
    assert first_study >= 5 and took < 3.5, took  # well before the study was through
    assert pacs.moves == 1
    assert job.waiting_reason == "waiting: node STOPME is suspended by an operator"
    assert set(job.items.values_list("status", "attempts")) == {(ItemStatus.PENDING, 0)}
    assert "deferred" in message or "0 done" in message


def test_query_slots_go_to_the_workers_in_the_order_they_asked(shared_redis, db):
    """Each taker reserves the next slot: a worker that asked first is never
    overtaken by one that asks again and again (one of a job's two workers
    waited 3 s at 120 queries a minute while the other sent five)."""
    node = make_node("TURNS", 104, "TURNS", queries_per_minute=600)  # one every 0.1 s
    first, second, third = (throttle.query_token(node) for _ in range(3))
    assert (first.taken, second.taken, third.taken) == (True, True, True)
    assert first.wait == pytest.approx(0, abs=0.02)
    assert second.wait == pytest.approx(0.1, abs=0.02)
    assert third.wait == pytest.approx(0.2, abs=0.02)


def test_a_retrieval_slot_further_than_the_horizon_is_left_for_later(shared_redis, db):
    node = make_node("HORIZON", 104, "HORIZON", retrievals_per_hour=3600)  # one a second
    assert throttle.retrieval_token(node, horizon=5).taken  # the first: now
    later = throttle.retrieval_token(node, horizon=0.5)  # a second away: the item is deferred
    assert not later.taken and later.wait == pytest.approx(1, abs=0.05)
    kept = throttle.retrieval_token(node, horizon=5)  # so the slot is still there
    assert kept.taken and kept.wait == pytest.approx(1, abs=0.05)
