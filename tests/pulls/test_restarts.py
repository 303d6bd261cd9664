"""A retrieval survives a restart of the storage SCP and of Redis, every instance once."""

import contextlib
import os
import signal
import sys
import threading
import time

import pytest
from django.db import connection

from pulls.cli.inline import run_inline
from pulls.jobs import items, queueing
from pulls.models import Job, JobStatus, RetrievedInstance
from pulls.retrieval.guard import StallGuard
from pulls.sandbox.procs import Server, free_port
from pulls.workers.tasks import enqueue_chunks
from tests.conftest import REPO, SCP_PORT, Worker, find_job, make_node, retrieval_job, wait_for
from tests.pulls.scripted_pacs import ScriptedPacs


def _assert_exactly_once(storage, project, instances):
    placed = sorted(p.stem for p in (storage / project.slug).rglob("*.dcm"))
    assert placed == sorted(i.sop_instance_uid for i in instances)
    assert RetrievedInstance.objects.filter(project=project).count() == len(instances)


def test_a_restart_of_the_storage_scp_loses_nothing(settings, tmp_path, alice, project, dicom_data):
    staging, storage = tmp_path / "staging", tmp_path / "storage"
    port = free_port()
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_STORAGE_ROOT = storage
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    settings.PACSNPULL_RETRY_SECONDS = 0
    settings.PACSNPULL_SCP_PORT = port
    settings.PACSNPULL_AE_TITLE = "RESTARTED"
    studies = sorted(dicom_data.studies)[:4]
    instances = [i for uid in studies for i in dicom_data.studies[uid]]

    def scp() -> Server:
        return Server(
            "storage SCP",
            [
                sys.executable,
                "-m",
                "pulls.dicom.scp_processes",
                "--aet",
                "RESTARTED",
                "--port",
                str(port),
                "--staging",
                str(staging),
            ],  # fmt: skip
            ports=[port],
            log_path=tmp_path / "scp.log",
            cwd=REPO,
        ).start()

    running = [scp()]

    def restart_when_the_first_files_land() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not list(storage.rglob("*.dcm")):
            time.sleep(0.02)
        os.kill(running[0].pid, signal.SIGKILL)  # mid-retrieval, as a crash would
        running[0].proc.wait()
        time.sleep(0.5)
        running.append(scp())

    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="slow",
        delay=0.05,
        destinations={"RESTARTED": ("127.0.0.1", port)},
    ) as pacs:
        node = make_node("SLOW", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies)
        killer = threading.Thread(target=restart_when_the_first_files_land)
        killer.start()
        try:
            job = run_inline(job, on_progress=lambda job: None)
        finally:
            killer.join()
            for server in running:
                server.stop()
    assert len(running) == 2, "the storage SCP was not restarted"
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    _assert_exactly_once(storage, project, instances)


def _short_leases(settings, storage, lease: int, **worker_env: str) -> dict[str, str]:
    """Leases of ``lease`` seconds and ``storage`` as the storage root, here and
    in the environment of the workers a test starts (returned)."""
    settings.PACSNPULL_LEASE_SECONDS = lease
    settings.PACSNPULL_STORAGE_ROOT = storage
    return {
        "PACSNPULL_LEASE_SECONDS": str(lease),
        "PACSNPULL_STORAGE_ROOT": str(storage),
        **worker_env,
    }


def test_a_restart_of_redis_loses_no_queued_work(
    redis_service, redis_url, flushable_db, sandbox, staging, settings, tmp_path, alice, project,
    dicom_data,
):  # fmt: skip
    storage = tmp_path / "storage"
    lease = 3
    env = _short_leases(
        settings, storage, lease,
        PACSNPULL_STAGING_DIR=str(staging), PACSNPULL_ARRIVAL_WAIT_SECONDS="1",
    )  # fmt: skip
    studies = sorted(dicom_data.studies)[:3]
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="honest",
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("HONEST", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        # Started: its message is in Redis now ...
        job = retrieval_job(alice, project, node, studies, start=True)
        redis_service.kill_and_restart()  # ... and gone
        worker = Worker(
            redis_url=redis_url,
            log_path=sandbox / "redis-restart-worker.log",
            env=env,
        ).start()
        try:
            time.sleep(lease + 1)
            assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED  # nothing ran
            assert items.items_reconcile(enqueue=enqueue_chunks)["requeued"] == len(studies)
            wait_for(
                lambda: Job.objects.get(pk=job.pk).status == JobStatus.DONE,
                timeout=60,
                what=f"the job; worker log:\n{worker.log_tail()}",
            )
        finally:
            worker.stop()
    _assert_exactly_once(storage, project, instances)


def test_a_restart_of_redis_in_the_middle_of_a_c_get_loses_nothing(
    redis_service, redis_url, flushable_db, sandbox, settings, tmp_path, alice, project,
    dicom_data,
):  # fmt: skip
    """Redis killed and started again while a worker is in the middle of a
    C-GET job: the job's messages, the node's association slots and the
    count-ahead turns are gone. The worker carries on, the reconciler sends
    again what was lost, and the job ends done with every instance once."""
    storage = tmp_path / "storage"
    env = _short_leases(settings, storage, 3)
    studies = sorted(dicom_data.studies)[:8]
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    restarted = threading.Event()
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="slow",
        delay=0.02,
        destinations={},
    ) as pacs:
        # Each C-GET sends two instances, then waits until Redis is back: the
        # restart falls in the middle of the job however slow the machine.
        pacs.pause = lambda number, index, event: (
            index == 2 and ScriptedPacs.until(restarted.is_set)
        )
        node = make_node("SLOW", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        worker = Worker(
            redis_url=redis_url, log_path=sandbox / "redis-mid-job-worker.log", env=env
        ).start()
        try:
            job = retrieval_job(alice, project, node, studies, kind="get", start=True)
            wait_for(lambda: list(storage.rglob("*.dcm")), timeout=60, what="the first files")
            redis_service.kill_and_restart()
            assert Job.objects.get(pk=job.pk).status == JobStatus.RUNNING
            restarted.set()

            def done() -> bool:
                items.items_reconcile(enqueue=enqueue_chunks)  # as the scheduled reconciler
                return Job.objects.get(pk=job.pk).status == JobStatus.DONE

            wait_for(done, timeout=90, what=f"the job; worker log:\n{worker.log_tail()}")
        finally:
            restarted.set()
            worker.stop()
    job = Job.objects.get(pk=job.pk)
    assert job.instances_received == job.instances_expected == len(instances)
    _assert_exactly_once(storage, project, instances)


def test_a_job_started_while_redis_is_down_is_saved_and_sent_once_it_is_back(
    redis_service, redis_url, flushable_db, alice, project
):
    """Starting a job does not fail when the queue cannot be reached (it used to
    answer 500 with the job saved): the job says why it waits, and its rows go
    out at the reconciler's first run once Redis is back, not a lease later."""
    import base64
    import json

    import redis as redis_lib

    from pulls.services import job_start

    node = make_node("NOWHERE", 9, "NOWHERE")
    node.granted_users.add(alice)
    rows = [{"QueryRetrieveLevel": "PATIENT", "PatientID": str(n)} for n in range(3)]
    job = find_job(alice, project, node, rows)
    with redis_service.down():
        job_start(job=job, user=alice)
    job.refresh_from_db()
    assert (job.status, job.waiting_reason) == (JobStatus.QUEUED, queueing.QUEUE_UNREACHABLE)
    assert set(job.items.values_list("queued_at", flat=True)) == {None}

    assert items.items_reconcile(enqueue=enqueue_chunks)["requeued"] == 3
    messages = redis_lib.Redis.from_url(redis_url).lrange(job.queue, 0, -1)
    sent = [json.loads(base64.b64decode(json.loads(raw)["body"]))[0][0] for raw in messages]
    assert sent == [sorted(job.items.values_list("pk", flat=True))]


@contextlib.contextmanager
def _stopped_in_flight(
    method, stop, *, settings, staging, storage, alice, project, dicom_data, hold_at: int = 1
):
    """A job of three studies from a slow PACS, run here; ``stop`` (job_cancel or
    job_pause) is called as soon as its first instance has arrived. Yields the
    job as run_inline left it, the PACS (still serving) and the instances.

    The stop lands mid-study however slow the machine: the PACS sends the
    study's second instance only once the job is stopped, and no third before
    the C-CANCEL has come (each bounded by a minute). The worker looks at the
    job when a response comes, at most every half second (StallGuard): the
    second instance goes more than that after the stop, so its response is
    one it looks at. "get-listed": a C-GET from a PACS that takes UID lists,
    which then fetches the three small studies with one C-GET (study_lists).
    ``hold_at``: the stop comes once that many instances have arrived, and
    the PACS's first retrieval waits for it before sending the next."""
    listed = method == "get-listed"
    method = "get" if listed else method
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_STORAGE_ROOT = storage
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    studies = sorted(dicom_data.studies)[:3]
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="slow",
        delay=0.3,
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
        uid_lists=listed,
    ) as pacs:
        node = make_node("SLOW", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, kind=method)
        stopped = Job.objects.filter(pk=job.pk, status__in=(JobStatus.CANCELLED, JobStatus.PAUSED))

        def stop_lands_mid_study(number: int, index: int, event) -> None:
            if number != 1:
                return
            if index == hold_at:
                try:
                    ScriptedPacs.until(lambda: pacs.cancel_came(event) or stopped.exists())
                finally:
                    connection.close()
                time.sleep(StallGuard(0).check_every + 0.1)  # a lower bound only
            elif index == hold_at + 1:
                ScriptedPacs.until(lambda: pacs.cancel_came(event))

        pacs.pause = stop_lands_mid_study
        # C-MOVE: instances arrive in the staging area; C-GET: in the project.
        arriving = staging if method == "move" else storage

        def stop_when_the_first_instance_arrives() -> None:
            try:
                wait_for(
                    lambda: len(list(arriving.rglob("*.dcm"))) >= hold_at,
                    timeout=60,
                    what=f"{hold_at} instance(s)",
                )
                stop(job=Job.objects.get(pk=job.pk), user=alice)
            finally:
                connection.close()

        stopper = threading.Thread(target=stop_when_the_first_instance_arrives)
        stopper.start()
        job = run_inline(job, on_progress=lambda job: None)
        stopper.join()
        yield job, pacs, instances


@pytest.mark.parametrize("method", ["move", "get", "get-listed"])
def test_cancel_stops_the_transfer_in_flight_with_a_c_cancel(
    method, settings, flushable_db, staging, tmp_path, alice, project, dicom_data
):
    from pulls.models import ItemStatus
    from pulls.services import job_cancel

    storage = tmp_path / "storage"
    with _stopped_in_flight(
        method, job_cancel, settings=settings, staging=staging, storage=storage, alice=alice,
        project=project, dicom_data=dicom_data,
    ) as (job, pacs, _):  # fmt: skip
        pass
    first = job.items.get(row=1)
    assert pacs.retrievals == 1  # the one in flight (for get-listed, of the three studies)
    assert job.status == JobStatus.CANCELLED
    assert first.status == ItemStatus.CANCELLED
    assert 0 < first.instances_received < first.instances_expected  # stopped mid-study
    assert set(job.items.exclude(row=1).values_list("status", flat=True)) == {ItemStatus.CANCELLED}
    assert not list(storage.rglob("*.part"))
    for path in storage.rglob("*.dcm"):  # what is there is whole
        assert path.stat().st_size > 1000
    if method != "move":  # and recorded in the project
        kept = sorted(path.stem for path in storage.rglob("*.dcm"))
        recorded = RetrievedInstance.objects.filter(project=project)
        assert sorted(recorded.values_list("sop_instance_uid", flat=True)) == kept


@pytest.mark.parametrize("method", ["move", "get", "get-listed"])
def test_a_pause_in_flight_keeps_what_arrived_and_resume_finishes_with_each_instance_once(
    method, settings, flushable_db, staging, tmp_path, alice, project, dicom_data
):
    """Pause during a transfer: the C-CANCEL goes out, what arrived is kept
    whole, the row waits (no attempt used, no error); Resume finishes the job
    with every instance in the project once."""
    from pulls.models import ItemStatus
    from pulls.services import job_pause, job_resume

    storage = tmp_path / "storage"
    with _stopped_in_flight(
        method, job_pause, settings=settings, staging=staging, storage=storage, alice=alice,
        project=project, dicom_data=dicom_data,
    ) as (job, pacs, instances):  # fmt: skip
        assert job.status == JobStatus.PAUSED
        first = job.items.get(row=1)
        assert (first.status, first.attempts, first.error_message) == (ItemStatus.PENDING, 0, "")
        assert set(job.items.values_list("status", flat=True)) == {ItemStatus.PENDING}
        kept = list(storage.rglob("*.dcm"))
        assert 0 < len(kept) < len(instances)  # stopped mid-study, what arrived is placed
        assert not list(storage.rglob("*.part"))

        pacs.delay = 0.0
        job = run_inline(job_resume(job=job, user=alice), on_progress=lambda job: None)
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    assert job.instances_received == len(instances)
    _assert_exactly_once(storage, project, instances)


def test_a_cancel_during_a_c_get_of_several_studies_keeps_and_records_what_arrived(
    settings, flushable_db, staging, tmp_path, alice, project, dicom_data
):
    """Three small studies in one C-GET (study_lists), cancelled once the
    second study's first instance has arrived (the PACS holds its second
    until then): every row is cancelled, and what arrived of both studies is
    kept whole and recorded, though the second study's row was never worked."""
    from pulls.models import ItemStatus
    from pulls.services import job_cancel

    storage = tmp_path / "storage"
    studies = sorted(dicom_data.studies)[:3]
    first_study = len(dicom_data.studies[studies[0]])
    with _stopped_in_flight(
        "get-listed", job_cancel, settings=settings, staging=staging, storage=storage,
        alice=alice, project=project, dicom_data=dicom_data, hold_at=first_study + 1,
    ) as (job, pacs, _):  # fmt: skip
        pass
    assert pacs.retrievals == 1
    assert job.status == JobStatus.CANCELLED
    assert set(job.items.values_list("status", flat=True)) == {ItemStatus.CANCELLED}
    kept = {path.stem for path in storage.rglob("*.dcm")}
    arrived_of = {
        uid: {i.sop_instance_uid for i in dicom_data.studies[uid]} & kept for uid in studies
    }
    assert len(arrived_of[studies[0]]) == first_study
    assert 0 < len(arrived_of[studies[1]]) < len(dicom_data.studies[studies[1]])
    assert not arrived_of[studies[2]]
    recorded = RetrievedInstance.objects.filter(project=project)
    assert set(recorded.values_list("sop_instance_uid", flat=True)) == kept
    assert not list(storage.rglob("*.part"))
