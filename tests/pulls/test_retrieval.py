"""Retrieval jobs: the PACS's instances in the project's storage, exactly, and checked."""

import contextlib
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from pulls.cli import run_inline
from pulls.models import (
    AuditAction,
    AuditEvent,
    ItemStatus,
    JobKind,
    JobStatus,
    RetrievedInstance,
)
from pulls.services import job_create, retrieval_create_from_find
from tests.conftest import SCP_PORT, make_node, retrieval_job
from tests.pulls.scripted_pacs import ScriptedPacs
from tests.pulls.test_engine import dataset_bytes

QUIET = {"on_progress": lambda job: None}


@pytest.fixture
def storage(settings, tmp_path, staging):
    settings.PACSNPULL_STORAGE_ROOT = tmp_path / "storage"
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_SCP_PORT = SCP_PORT
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    settings.PACSNPULL_RETRY_SECONDS = 0
    return settings.PACSNPULL_STORAGE_ROOT


@pytest.fixture(params=["orthanc", "dcmqrscp"])
def pacs_node(request, alice, bob):
    pacs = request.getfixturevalue(request.param)
    port, ae = (
        (pacs.dicom_port, "ORTHANC") if request.param == "orthanc" else (pacs.port, "DCMQRSCP")
    )
    node = make_node(request.param.upper(), port, ae, connect_timeout=5)
    node.granted_users.add(alice, bob)
    return node


def _find(alice, project, node, patient_ids):
    rows = [
        {"QueryRetrieveLevel": "STUDY", "PatientID": pid, "StudyInstanceUID": ""}
        for pid in patient_ids
    ]
    job = job_create(kind=JobKind.FIND, owner=alice, project=project, node=node, rows=rows)
    return run_inline(job, **QUIET)


def _assert_project_holds_exactly(project, instances, root: Path, dicom_data):
    files = sorted(p for p in (root / project.slug).rglob("*.dcm"))
    assert {p.stem for p in files} == {i.sop_instance_uid for i in instances}
    for inst in instances:
        path = (
            root
            / project.slug
            / inst.patient_id
            / inst.study_instance_uid
            / inst.series_instance_uid
        )
        placed = path / f"{inst.sop_instance_uid}.dcm"
        assert dataset_bytes(placed) == dataset_bytes(dicom_data.root / inst.path)
    assert RetrievedInstance.objects.filter(project=project).count() == len(instances)


@pytest.mark.parametrize("method", ["move", "get"])
def test_a_retrieval_puts_exactly_the_pacs_instances_in_the_project(
    method, pacs_node, storage, alice, project, dicom_data
):
    patients = sorted(dicom_data.patients)[:2]
    find = _find(alice, project, pacs_node, patients)
    job = retrieval_create_from_find(find_job=find, user=alice, method=method)
    assert job.kind == (JobKind.MOVE if method == "move" else JobKind.GET)
    job = run_inline(job, **QUIET)
    instances = [i for p in patients for i in dicom_data.patients[p]]
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    assert (job.instances_expected, job.instances_received) == (len(instances), len(instances))
    _assert_project_holds_exactly(project, instances, storage, dicom_data)
    assert AuditEvent.objects.filter(action=method, job=job).count() == job.items_total

    # A second run costs nothing: every item is complete in the project already.
    again = run_inline(
        retrieval_create_from_find(find_job=find, user=alice, method=method), **QUIET
    )
    assert again.status == JobStatus.DONE
    assert again.bytes_received == 0
    _assert_project_holds_exactly(project, instances, storage, dicom_data)


def test_a_series_retrieval_takes_only_that_series(orthanc, storage, alice, project, dicom_data):
    node = make_node("ORTHANC", orthanc.dicom_port, "ORTHANC")
    node.granted_users.add(alice)
    series_uid, instances = sorted(dicom_data.series.items())[0]
    rows = [
        {
            "QueryRetrieveLevel": "SERIES",
            "StudyInstanceUID": instances[0].study_instance_uid,
            "SeriesInstanceUID": series_uid,
        }
    ]
    job = job_create(kind=JobKind.MOVE, owner=alice, project=project, node=node, rows=rows)
    job = run_inline(job, **QUIET)
    assert job.status == JobStatus.DONE
    _assert_project_holds_exactly(project, instances, storage, dicom_data)


def test_success_with_instances_withheld_is_retried_then_failed_with_the_numbers(
    storage, alice, project, dicom_data, settings
):
    from tests.pulls.scripted_pacs import ScriptedPacs

    settings.PACSNPULL_MAX_ATTEMPTS = 2
    study_uid, instances = sorted(dicom_data.studies.items())[4]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="withhold",
        destinations={django_settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("LIAR", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = job_create(
            kind=JobKind.MOVE,
            owner=alice,
            project=project,
            node=node,
            rows=[{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}],
        )
        job = run_inline(job, **QUIET)
    item = job.items.get()
    assert item.status == ItemStatus.FAILED
    assert item.attempts == 2
    n = len(instances)
    assert item.error_message.startswith("gave up after 2 attempts: the PACS reported success")
    assert f"{n - 2} of {n} in the project" in item.error_message
    assert (item.instances_expected, item.instances_received) == (n, n - 2)


def test_c_get_instances_that_cannot_be_written_leave_the_row_failed_with_the_reason(
    orthanc, storage, alice, project, dicom_data, settings
):
    """C-GET answers each instance before writing it (receiving.InstanceWriter.
    answers_first), so the PACS reports them all sent: the ones not written are
    counted here all the same, and the row says so instead of blaming the PACS."""
    settings.PACSNPULL_MAX_ATTEMPTS = 2
    node = make_node("ORTHANC", orthanc.dicom_port, "ORTHANC")
    node.granted_users.add(alice)
    (study_uid, instances), (other_uid, others) = sorted(dicom_data.studies.items())[:2]
    series_uid = instances[0].series_instance_uid
    # A file where the study's folder of one series should be: its instances cannot land.
    blocked = storage / project.slug / instances[0].patient_id / study_uid / series_uid
    blocked.parent.mkdir(parents=True)
    blocked.write_bytes(b"not a folder")
    rows = [
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in (study_uid, other_uid)
    ]
    job = job_create(kind=JobKind.GET, owner=alice, project=project, node=node, rows=rows)
    job = run_inline(job, **QUIET)
    failed, done = job.items.order_by("row")
    n, lost = len(instances), sum(i.series_instance_uid == series_uid for i in instances)
    assert (failed.status, failed.attempts) == (ItemStatus.FAILED, 2)
    assert f"{lost} instance(s) arrived but could not be written here" in failed.error_message
    assert f"{n - lost} of {n} in the project" in failed.error_message
    assert (failed.instances_received, failed.instances_failed) == (n - lost, lost)
    assert done.status == ItemStatus.DONE  # the next row goes on
    assert job.status == JobStatus.FAILED
    kept = {p.stem for p in (storage / project.slug).rglob("*.dcm")}
    assert kept == {
        i.sop_instance_uid for i in instances + others if i.series_instance_uid != series_uid
    }
    assert not list((storage / project.slug).rglob("*.part"))


def test_a_c_get_removes_the_writes_a_killed_worker_cut_short_in_the_project(
    orthanc, storage, alice, project, dicom_data, settings
):
    """Each instance is written under a temp name in the project's .incoming,
    then renamed: a worker killed mid-write leaves one there. The next C-GET
    into the project removes those older than the staging sweep's limit, and
    leaves a write that may still be going on."""
    import os
    import time

    from pulls.dicom.staging import TEMP_PREFIX

    node = make_node("ORTHANC", orthanc.dicom_port, "ORTHANC")
    node.granted_users.add(alice)
    incoming = project.storage_dir / ".incoming"
    incoming.mkdir(parents=True)
    cut, fresh = incoming / f"{TEMP_PREFIX}1-0.part", incoming / f"{TEMP_PREFIX}2-0.part"
    cut.write_bytes(b"half an instance")
    fresh.write_bytes(b"an instance being written")
    old = time.time() - settings.PACSNPULL_QUARANTINE_AFTER_SECONDS - 60
    os.utime(cut, (old, old))
    study_uid = sorted(dicom_data.studies)[0]
    job = retrieval_job(alice, project, node, [study_uid], kind="get", start=True)
    job = run_inline(job, **QUIET)
    assert job.status == JobStatus.DONE
    assert sorted(incoming.iterdir()) == [fresh]
    _assert_project_holds_exactly(project, dicom_data.studies[study_uid], storage, dicom_data)


def test_an_unknown_move_destination_is_explained_and_not_retried(
    dcmqrscp, storage, alice, project, dicom_data
):
    node = make_node("DCMQRSCP", dcmqrscp.port, "DCMQRSCP", move_destination="NOBODY")
    node.granted_users.add(alice)
    study_uid = sorted(dicom_data.studies)[0]
    job = job_create(
        kind=JobKind.MOVE,
        owner=alice,
        project=project,
        node=node,
        rows=[{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid}],
    )
    item = run_inline(job, **QUIET).items.get()
    assert (item.status, item.attempts, item.error_code) == (ItemStatus.FAILED, 1, 0xA801)
    assert "register the move destination AE title 'NOBODY' at 127.0.0.1 port" in item.error_message


def test_the_manifest_lists_every_instance_and_is_access_checked(
    client, orthanc, storage, alice, bob, charlie, project, dicom_data
):
    node = make_node("ORTHANC", orthanc.dicom_port, "ORTHANC")
    node.granted_users.add(alice)
    patient = sorted(dicom_data.patients)[3]
    find = _find(alice, project, node, [patient])
    job = run_inline(retrieval_create_from_find(find_job=find, user=alice, method="move"), **QUIET)
    client.force_login(charlie)
    assert client.get(f"/jobs/{job.code}/manifest.csv").status_code == 404
    client.force_login(bob)  # a viewer may read
    response = client.get(f"/jobs/{job.code}/manifest.csv")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert (
        lines[0]
        == "path,PatientID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,Modality,bytes"
    )
    assert len(lines) - 1 == len(dicom_data.patients[patient])
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT, actor=bob, job=job).exists()


def test_retrieve_these_from_the_find_page(
    client, orthanc, storage, alice, bob, project, dicom_data
):
    node = make_node("ORTHANC", orthanc.dicom_port, "ORTHANC")
    node.granted_users.add(alice, bob)
    find = _find(alice, project, node, sorted(dicom_data.patients)[:1])
    client.force_login(bob)
    assert (
        client.post(
            f"/jobs/{find.code}/retrieve/", {"method": "move", "level": "STUDY"}
        ).status_code
        == 403
    )
    client.force_login(alice)
    response = client.post(
        f"/jobs/{find.code}/retrieve/", {"method": "get", "level": "STUDY", "modality": ""}
    )
    assert response.status_code == 302
    retrieval = find.project.jobs.exclude(pk=find.pk).get()
    assert (retrieval.kind, retrieval.status) == (JobKind.GET, JobStatus.DRAFT)
    assert retrieval.items_total == 2  # the patient's two studies


def test_pause_holds_the_work_and_resume_releases_it(
    client, orthanc, storage, alice, bob, project, dicom_data
):
    from pulls.runner import run_chunk

    node = make_node("ORTHANC", orthanc.dicom_port, "ORTHANC")
    node.granted_users.add(alice, bob)
    rows = [
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid}
        for uid in sorted(dicom_data.studies)[:2]
    ]
    job = job_create(
        kind=JobKind.MOVE, owner=alice, project=project, node=node, rows=rows, start=True
    )
    client.force_login(bob)
    assert client.post(f"/jobs/{job.code}/pause/").status_code == 403
    client.force_login(alice)
    client.post(f"/jobs/{job.code}/pause/")
    job.refresh_from_db()
    assert (job.status, job.waiting_reason) == (JobStatus.PAUSED, "paused by alice")
    assert run_chunk(list(job.items.values_list("pk", flat=True))) == "nothing to do"
    assert set(job.items.values_list("status", "attempts")) == {(ItemStatus.PENDING, 0)}
    assert not RetrievedInstance.objects.exists()
    client.post(f"/jobs/{job.code}/resume/")
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    run_chunk(list(job.items.values_list("pk", flat=True)))
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert {a for a in AuditEvent.objects.filter(job=job).values_list("action", flat=True)} >= {
        AuditAction.JOB_PAUSED,
        AuditAction.JOB_RESUMED,
    }


@pytest.mark.parametrize("kind", [JobKind.MOVE, JobKind.GET])
def test_a_full_disk_pauses_the_job_and_resume_finishes_it(
    kind, orthanc, staging, settings, tmp_path, alice, project, dicom_data
):
    """In the test's transaction: rows are finished inline (see RowFinisher)."""
    _a_full_disk_pauses_the_job_and_resume_finishes_it(
        orthanc, staging, settings, tmp_path, alice, project, dicom_data, reason="paused: only ",
        kind=kind,
    )  # fmt: skip


def test_a_disk_that_fills_during_a_c_get_pauses_the_job_and_loses_nothing(
    orthanc, staging, settings, tmp_path, alice, project, dicom_data
):
    """C-GET answers each instance before writing it (receiving.InstanceWriter.
    answers_first). With no free-space margin, the disk fills in the middle of
    a study: the instances then not written are counted, the row is not done
    (nor failed), the job pauses saying the disk is full, and resume fetches
    exactly what is missing."""
    _a_full_disk_pauses_the_job_and_resume_finishes_it(
        orthanc, staging, settings, tmp_path, alice, project, dicom_data,
        reason="paused: the disk of ", kind=JobKind.GET, min_free=1, disk_size="88k",
    )  # fmt: skip


def test_a_full_disk_found_while_finishing_rows_on_their_thread_pauses_the_job(
    flushable_db, orthanc, staging, settings, tmp_path, alice, project, dicom_data
):
    """Committed data: each row is placed and recorded on the finisher's thread
    while the next row's C-MOVE goes on; the disk fills up there (copying from
    the staging area to the project's small disk) or at the check before a
    transfer. Either way the job pauses, nothing is failed or half-written."""
    _a_full_disk_pauses_the_job_and_resume_finishes_it(
        orthanc, staging, settings, tmp_path, alice, project, dicom_data, reason="paused: "
    )


def _a_full_disk_pauses_the_job_and_resume_finishes_it(
    orthanc, staging, settings, tmp_path, alice, project, dicom_data, *, reason: str,
    kind: JobKind = JobKind.MOVE, min_free: int = 24 << 10, disk_size: str = "96k",
):  # fmt: skip
    import subprocess

    from pulls.services import job_resume
    from tests.conftest import small_tmpfs

    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_SCP_PORT = SCP_PORT
    settings.PACSNPULL_ARRIVAL_WAIT_SECONDS = 1
    settings.PACSNPULL_MIN_FREE_BYTES = min_free
    node = make_node("ORTHANC", orthanc.dicom_port, "ORTHANC")
    node.granted_users.add(alice)
    studies = sorted(dicom_data.studies)
    # A file takes a page (4 KiB) of a tmpfs: 96k hold whole studies of 6, 88k do not.
    with small_tmpfs(tmp_path / "disk", disk_size) as disk:
        settings.PACSNPULL_STORAGE_ROOT = disk
        rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in studies]
        job = job_create(kind=kind, owner=alice, project=project, node=node, rows=rows)
        job = run_inline(job, **QUIET)
        assert job.status == JobStatus.PAUSED
        assert job.waiting_reason.startswith(reason)
        assert "free some space, then resume the job" in job.waiting_reason
        done = job.items.filter(status=ItemStatus.DONE).count()
        assert 0 < done < len(studies)
        assert not job.items.filter(status=ItemStatus.FAILED).exists()  # nothing lost
        # A full disk is not the rows' fault: none is marked with an error or a retry.
        assert not job.items.exclude(error_message="").exists()
        assert not list(disk.rglob("*.part"))
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        job = job_resume(job=job, user=alice)
        job = run_inline(job, **QUIET)
        assert job.status == JobStatus.DONE
        placed = sorted(p.stem for p in disk.rglob("*.dcm"))
        assert placed == sorted(i.sop_instance_uid for i in dicom_data.instances)
        assert not list(disk.rglob("*.part"))


def test_a_retrieval_from_a_find_reuses_its_instance_counts(
    storage, alice, project, dicom_data, settings
):
    """The find asked back NumberOfStudyRelatedInstances: the retrieval's first
    attempt sends no C-FIND at all (nor spends the node's query tokens)."""
    instances = dicom_data.studies[sorted(dicom_data.studies)[0]]
    patient = instances[0].patient_id
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="honest",
        destinations={settings.PACSNPULL_AE_TITLE: ("127.0.0.1", SCP_PORT)},
    ) as pacs:
        node = make_node("COUNTED", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        find = _find(alice, project, node, [patient])
        finds_before = pacs.finds
        job = retrieval_create_from_find(find_job=find, user=alice, method="move")
        assert set(job.items.values_list("instances_expected", flat=True)) == {len(instances)}
        # And the SOP classes it named, which a C-GET of it would propose.
        assert set(job.items.values_list("sop_classes", flat=True)) == {
            "\\".join(sorted({i.sop_class_uid for i in instances}))
        }
        job = run_inline(job, **QUIET)
        assert pacs.finds == finds_before
    assert job.status == JobStatus.DONE
    assert job.instances_received == len(instances)


_CR = "1.2.840.10008.5.1.4.1.1.1"


@pytest.mark.parametrize("misnamed", [False, True], ids=["named", "named-wrong"])
def test_a_c_get_proposes_the_classes_the_pacs_named_and_all_if_they_were_wrong(
    storage, alice, project, dicom_data, misnamed
):
    """The count names the studies' SOP classes: their C-GETs run on an
    association proposing only those. A PACS that named them wrong (here: CR
    for CT and MR studies) refuses to send what it has no context for; the
    row's C-GET is then done again at once, proposing every class: the row is
    done on its first attempt, every instance in the project once."""
    studies = [
        uid
        for uid, instances in sorted(dicom_data.studies.items())
        if instances[0].modality in ("CT", "MR")
    ][:3]
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="honest",
        destinations={},
        uid_lists=True,
        name_classes=(lambda classes: [_CR]) if misnamed else None,
    ) as pacs:
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = run_inline(retrieval_job(alice, project, node, studies, kind="get"), **QUIET)
    assert job.status == JobStatus.DONE
    assert set(job.items.values_list("attempts", flat=True)) == {1}
    _assert_project_holds_exactly(project, instances, storage, dicom_data)
    classes = {i.sop_class_uid for i in instances}
    if not misnamed:
        assert pacs.gets == len(studies)
        # C-FIND and C-GET (two models each) and the named classes, not ~120.
        assert max(pacs.proposed_at_get) == 4 + len(classes)
    else:
        # The first study's C-GET, again proposing all; the others on that association.
        assert pacs.gets == len(studies) + 1
        assert pacs.proposed_at_get[0] == 4 + 1  # CR only
        assert min(pacs.proposed_at_get[1:]) > 100


def test_a_c_get_of_a_study_with_a_class_the_pacs_left_out_is_done_again_at_once(
    storage, alice, project, dicom_data
):
    """A study of CT and MR instances, of which the PACS names only CT: the MR
    sub-operations fail (status 0xB000, the CT instances arrive); the C-GET is
    done again proposing every class, and the row is done on its first attempt."""
    from pydicom import dcmread

    studies = [dicom_data.studies[uid] for uid in sorted(dicom_data.studies)]
    ct = next(s for s in studies if s[0].modality == "CT")
    mr = next(s for s in studies if s[0].modality == "MR")
    study_uid = ct[0].study_instance_uid
    with ScriptedPacs(
        [dicom_data.root / i.path for i in ct + mr],
        behaviour="honest",
        destinations={},
        uid_lists=True,
        name_classes=lambda classes: [c for c in classes if c == ct[0].sop_class_uid],
    ) as pacs:
        for ds in pacs.datasets:  # one study of both
            ds.StudyInstanceUID = study_uid
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        # Two rows (a count names the classes of two studies or more): the other
        # study, then the mixed one.
        other = next(
            uid
            for uid, s in sorted(dicom_data.studies.items())
            if s[0].modality == "CT" and uid != study_uid
        )
        pacs.datasets += [dcmread(dicom_data.root / i.path) for i in dicom_data.studies[other]]
        job = run_inline(
            retrieval_job(alice, project, node, [other, study_uid], kind="get"), **QUIET
        )
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    item = job.items.get(row=2)
    assert (item.attempts, item.instances_expected, item.instances_received) == (
        1, len(ct + mr), len(ct + mr),
    )  # fmt: skip
    placed = {p.stem for p in (storage / project.slug).rglob("*.dcm")}
    assert placed == {i.sop_instance_uid for i in ct + mr + dicom_data.studies[other]}
    assert pacs.gets == 3  # the mixed study's C-GET twice


def _one_row_chunks_of(job) -> list[list[int]]:
    return _chunks_of(job, 1)


def _chunks_of(job, size: int) -> list[list[int]]:
    rows = list(job.items.order_by("row").values_list("pk", flat=True))
    return [rows[start : start + size] for start in range(0, len(rows), size)]


@contextlib.contextmanager
def _get_job_in_chunks(
    alice, project, dicom_data, monkeypatch, *, chunk=1, uid_lists=False, **node_limits
):
    """A started C-GET job of every study from a scripted PACS (answering UID
    lists or not), ``chunk`` rows per chunk: (the PACS, the job, its
    instances, its chunks)."""
    from pulls import queueing

    monkeypatch.setitem(queueing.CHUNK_SIZES, "get", chunk)
    studies = sorted(dicom_data.studies)
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances],
        behaviour="honest",
        destinations={},
        uid_lists=uid_lists,
    ) as pacs:
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title, **node_limits)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, kind="get", start=True)
        yield pacs, job, instances, _chunks_of(job, chunk)


def test_a_worker_goes_on_with_the_jobs_queued_rows_on_its_association(
    storage, alice, project, dicom_data, monkeypatch
):
    """Chunks of one row: the first chunk's worker works the job's other queued
    rows too, on its association; their own messages then find nothing to do.
    Every instance is in the project exactly once. (Two associations: the first,
    which counts the first row's study, proposes no storage class yet; the
    second proposes the classes the count named.)"""
    from pulls.runner import run_chunk

    with _get_job_in_chunks(alice, project, dicom_data, monkeypatch) as (
        pacs, job, instances, chunks,
    ):  # fmt: skip
        assert len(chunks) == len(dicom_data.studies) > 1
        assert (
            run_chunk(chunks[0])
            == f"job {job.pk}: {len(chunks)} done, 0 failed or retrying, 0 deferred"
        )
        assert pacs.associations == 2
        for chunk in chunks[1:]:
            assert run_chunk(chunk) == "nothing to do"
        assert pacs.associations == 2
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert job.instances_received == len(instances)
    assert set(job.items.values_list("attempts", flat=True)) == {1}
    _assert_project_holds_exactly(project, instances, storage, dicom_data)


def test_rows_deferred_while_the_nodes_only_slot_is_taken_are_worked_by_its_holder(
    storage, alice, project, dicom_data, monkeypatch
):
    """A node that allows one association: the chunks that find it taken go
    back to the queue for a retry in seconds, and the worker that holds the
    slot goes on with them on its association. (Before, it could not see them:
    a job ran one chunk per retry, 25 times slower.)"""
    from pulls import throttle
    from pulls.runner import DEFERRED_SOON, run_chunk

    with _get_job_in_chunks(alice, project, dicom_data, monkeypatch, max_associations=1) as (
        pacs,
        job,
        instances,
        chunks,
    ):
        holder = throttle.association_slot(job.node, ttl=30)  # another worker's chunk, say
        for chunk in chunks[1:]:
            assert run_chunk(chunk).startswith(f"{DEFERRED_SOON} job {job.pk}: waiting")
        holder.release()
        assert (
            run_chunk(chunks[0])
            == f"job {job.pk}: {len(chunks)} done, 0 failed or retrying, 0 deferred"
        )
        for chunk in chunks[1:]:  # their retries
            assert run_chunk(chunk) == "nothing to do"
        # One to count, one proposing every storage class (this PACS counts one
        # study at a time, without naming its classes); not one per chunk.
        assert pacs.associations == 2
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert set(job.items.values_list("attempts", flat=True)) == {1}
    _assert_project_holds_exactly(project, instances, storage, dicom_data)


def test_a_bulk_worker_does_not_go_on_while_interactive_work_waits_for_the_node(
    storage, alice, project, dicom_data, monkeypatch
):
    """Interactive work that found every slot of the node taken marks the node:
    the bulk worker finishes its own chunk, then lets its slot go."""
    from pulls import queueing, throttle
    from pulls.runner import run_chunk

    monkeypatch.setitem(queueing.CHUNK_SIZES, "get", 1)
    studies = sorted(dicom_data.studies)
    with ScriptedPacs(
        [dicom_data.root / i.path for i in dicom_data.instances],
        behaviour="honest",
        destinations={},
    ) as pacs:
        node = make_node("SCRIPTED", pacs.port, pacs.ae_title, max_associations=1)
        node.granted_users.add(alice)
        job = retrieval_job(alice, project, node, studies, kind="get", start=True)
        assert job.queue == "bulk"
        taken = throttle.association_slot

        def taken_then_wanted(*args, **kwargs):
            slot = taken(*args, **kwargs)
            # An interactive job comes, finds the node's only slot taken, marks the node.
            assert taken(node, ttl=30, interactive=True) is None
            return slot

        monkeypatch.setattr(throttle, "association_slot", taken_then_wanted)
        message = run_chunk(_one_row_chunks_of(job)[0])
    assert message == f"job {job.pk}: 1 done, 0 failed or retrying, 0 deferred"
    assert job.items.filter(status=ItemStatus.PENDING).count() == len(studies) - 1


@pytest.mark.parametrize("uid_lists", [True, False], ids=["uid-lists", "one-by-one"])
def test_the_rows_a_worker_takes_are_counted_with_one_query_where_the_pacs_allows(
    uid_lists, storage, alice, project, dicom_data, monkeypatch
):
    """Rows naming studies (not from a find) need the PACS's counts: one C-FIND
    naming all of the chunk's studies in a UID list; a PACS that does not answer
    lists gets one C-FIND per study. Either way every instance arrives, counted."""
    from pulls.runner import run_chunk

    studies = sorted(dicom_data.studies)
    with _get_job_in_chunks(
        alice, project, dicom_data, monkeypatch, chunk=len(studies), uid_lists=uid_lists,
        queries_per_minute=0,
    ) as (pacs, job, instances, chunks):  # fmt: skip
        run_chunk(chunks[0])
        assert pacs.finds == (1 if uid_lists else 1 + len(studies))
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert set(job.items.values_list("instances_expected", flat=True)) == {
        len(dicom_data.studies[uid]) for uid in studies
    }
    _assert_project_holds_exactly(project, dicom_data.instances, storage, dicom_data)


@pytest.mark.parametrize(("count_ahead", "chunk", "finds"), [(50, 1, 2), (3, 1, 4), (2, 8, 1)])
def test_a_count_covers_the_studies_of_the_jobs_next_rows_too(
    count_ahead, chunk, finds, storage, alice, project, dicom_data, monkeypatch
):
    """8 studies in chunks of one row: the C-FIND that counts a chunk's study
    names the studies of the job's next waiting rows too (up to COUNT_AHEAD in
    all) and keeps their counts in those rows. The job sends one C-FIND per
    COUNT_AHEAD studies, not one per chunk (8), and so spends fewer of the
    node's query tokens. An association's first rows are counted alone (the
    job's other workers, starting at the same moment, would count the same
    studies ahead). A chunk of more studies than COUNT_AHEAD is counted whole,
    with nothing ahead. Every instance arrives, counted."""
    from pulls import retrieval
    from pulls.runner import run_chunk

    monkeypatch.setattr(retrieval, "COUNT_AHEAD", count_ahead)
    with _get_job_in_chunks(
        alice, project, dicom_data, monkeypatch, chunk=chunk, uid_lists=True, queries_per_minute=0
    ) as (pacs, job, instances, chunks):
        for rows in chunks:
            run_chunk(rows)
        assert pacs.finds == finds
    job.refresh_from_db()
    assert job.status == JobStatus.DONE
    assert dict(job.items.values_list("identifier__StudyInstanceUID", "instances_expected")) == {
        uid: len(its) for uid, its in dicom_data.studies.items()
    }
    _assert_project_holds_exactly(project, instances, storage, dicom_data)


def test_rows_naming_studies_are_counted_and_retrieved_exactly(
    pacs_node, storage, alice, project, dicom_data
):
    """Orthanc answers the chunk's UID-list count; dcmqrscp gets the studies
    counted one by one. The project holds exactly the PACS's instances."""
    studies = sorted(dicom_data.studies)[:3]
    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": uid} for uid in studies]
    job = job_create(kind=JobKind.GET, owner=alice, project=project, node=pacs_node, rows=rows)
    job = run_inline(job, **QUIET)
    instances = [i for uid in studies for i in dicom_data.studies[uid]]
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    assert (job.instances_expected, job.instances_received) == (len(instances), len(instances))
    _assert_project_holds_exactly(project, instances, storage, dicom_data)
