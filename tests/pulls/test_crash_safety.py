"""Faults lose no work: a worker SIGKILLed in the middle of a retrieval."""

import threading
import time

import pytest

from pulls.jobs import items
from pulls.models import ItemStatus, Job, JobStatus, RetrievedInstance
from pulls.workers.tasks import enqueue_chunks
from tests.conftest import SCP_PORT, Worker, make_node, retrieval_job, wait_for
from tests.pulls.retrieval_support import assert_project_holds_exactly
from tests.pulls.scripted_pacs import ScriptedPacs

LEASE = 4


@pytest.mark.parametrize("method", ["move", "get"])
def test_a_killed_worker_loses_no_instance_and_places_none_twice(
    method, redis_url, flushable_db, sandbox, staging, settings, tmp_path, alice, project,
    dicom_data,
):  # fmt: skip
    storage = tmp_path / "storage"
    env = {
        "PACSNPULL_LEASE_SECONDS": str(LEASE),
        "PACSNPULL_STAGING_DIR": str(staging),
        "PACSNPULL_STORAGE_ROOT": str(storage),
        "PACSNPULL_ARRIVAL_WAIT_SECONDS": "1",
        "PACSNPULL_RETRY_SECONDS": "0",
    }
    settings.PACSNPULL_LEASE_SECONDS = LEASE
    settings.PACSNPULL_STORAGE_ROOT = storage
    studies = sorted(dicom_data.studies)[:4]
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="slow",
        delay=0.1,
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        # The first study goes through; every later transfer stops after its
        # first instance until the worker has been killed: the kill lands in
        # the middle of the chunk (and of a transfer) however slow the machine.
        killed = threading.Event()
        pacs.pause = lambda number, index, event: (
            number > 1 and index == 1 and ScriptedPacs.until(killed.is_set)
        )
        node = make_node("SLOW", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, kind=method, start=True)
        workers = []

        def worker() -> Worker:
            workers.append(
                Worker(
                    redis_url=redis_url,
                    log_path=sandbox / f"crash-worker-{len(workers)}.log",
                    env=env,
                ).start()
            )
            return workers[-1]

        try:
            first = worker()
            wait_for(
                lambda: job.items.filter(status=ItemStatus.DONE).exists(),
                timeout=60,
                what=f"a first study; log:\n{first.log_tail()}",
            )
            first.kill()  # SIGKILL, main process and pool, mid-chunk
            killed.set()
            left = job.items.exclude(status=ItemStatus.DONE).count()
            assert left > 0, "the worker finished before it could be killed"
            time.sleep(LEASE + 1)  # a lower bound: the leases it held have expired
            counts = items.items_reconcile(enqueue=enqueue_chunks)
            assert counts["released"] == left
            second = worker()
            wait_for(
                lambda: Job.objects.get(pk=job.pk).status == JobStatus.DONE,
                timeout=90,
                what=f"the job to finish; log:\n{second.log_tail()}",
            )
        finally:
            killed.set()
            for w in workers:
                w.stop()
    placed = sorted(p.stem for p in (storage / project.slug).rglob("*.dcm"))
    assert placed == sorted(i.sop_instance_uid for i in instances)  # each exactly once
    assert RetrievedInstance.objects.filter(project=project).count() == len(instances)
    # Every file in the layout whole, byte for byte. (A C-GET's write cut short
    # by the kill may stay in the project's .incoming, outside the layout, until
    # it is older than the quarantine age: the next C-GET chunk removes it then.)
    assert_project_holds_exactly(project, instances, storage, dicom_data)
    job.refresh_from_db()
    assert job.instances_received == len(instances)
