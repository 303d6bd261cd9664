"""Retrieval jobs: the PACS's instances in the project's storage, exactly, and checked."""

import time
from datetime import date

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError

from pulls.cli.inline import run_inline
from pulls.models import (
    AuditAction,
    AuditEvent,
    FindResult,
    ItemStatus,
    JobKind,
    JobStatus,
    RetrievedInstance,
)
from pulls.services import job_create, job_retry_failed, retrieval_create_from_find
from tests.conftest import SCP_PORT, make_node, retrieval_job
from tests.pulls.retrieval_support import QUIET, assert_project_holds_exactly
from tests.pulls.scripted_pacs import ScriptedPacs


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
    assert_project_holds_exactly(project, instances, storage, dicom_data)
    assert AuditEvent.objects.filter(action=method, job=job).count() == job.items_total

    # A second run costs nothing: every item is complete in the project already.
    again = run_inline(
        retrieval_create_from_find(find_job=find, user=alice, method=method), **QUIET
    )
    assert again.status == JobStatus.DONE
    assert again.bytes_received == 0
    assert_project_holds_exactly(project, instances, storage, dicom_data)


@pytest.mark.parametrize("method", ["move", "get"])
def test_a_patient_root_retrieval_names_only_the_unique_keys(
    method, dcmqrscp, storage, alice, project, dicom_data
):
    """Rows of a seed query carry other keys (``"PatientName": "*"``, a date);
    the C-MOVE or C-GET names only PatientID and StudyInstanceUID in the
    patient root model (PS3.4 C.4.2.2.1). A PACS may refuse another key, or
    match on it: dcmqrscp, sent the date too, reports success and sends none."""
    node = make_node("DCMQRSCP", dcmqrscp.port, "DCMQRSCP", connect_timeout=5, query_model="P")
    node.granted_users.add(alice)
    patient = sorted(dicom_data.patients)[0]
    instances = dicom_data.patients[patient]
    rows = [
        {
            "QueryRetrieveLevel": "STUDY",
            "PatientID": patient,
            "StudyInstanceUID": study,
            "PatientName": "*",
            "StudyDate": "19000101",
        }
        for study in sorted({i.study_instance_uid for i in instances})
    ]
    job = job_create(kind=method, owner=alice, project=project, node=node, rows=rows)
    job = run_inline(job, **QUIET)
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    assert_project_holds_exactly(project, instances, storage, dicom_data)


def test_retrieve_these_keeps_the_matches_its_filters_name(alice, project, orthanc_node):
    """Retrieve these with filters: modality, a study or series description
    (contained, or a pattern with * and ?, any case), a date range; one row per
    study or series kept, keyed by its UIDs."""
    find = job_create(
        kind=JobKind.FIND,
        owner=alice,
        project=project,
        node=orthanc_node,
        rows=[{"QueryRetrieveLevel": "SERIES", "PatientID": "P1"}],
    )
    item = find.items.get()
    for study, series, modality, day, study_text, series_text in (
        ("1.1", "1.1.1", "CT", date(2020, 1, 5), "CT CHEST", "Axial 1mm"),
        ("1.1", "1.1.2", "CT", date(2020, 1, 5), "CT CHEST", "Coronal"),
        ("1.2", "1.2.1", "MR", date(2021, 6, 1), "MR BRAIN", "T1 axial"),
        ("1.3", "1.3.1", "CT", date(2022, 3, 3), "CT ABDOMEN", "AXIAL 5mm"),
        ("1.4", "1.4.1", "PT", date(2023, 1, 1), "a" * 64, "100% DOSE_2"),
    ):
        FindResult.objects.create(
            job=find,
            item=item,
            attributes={"StudyDescription": study_text, "SeriesDescription": series_text},
            patient_id="P1",
            study_instance_uid=study,
            series_instance_uid=series,
            study_date=day,
            modality=modality,
            study_description=study_text,
            series_description=series_text,
        )

    def rows(**filters):
        job = retrieval_create_from_find(find_job=find, user=alice, method="get", **filters)
        return [
            (row.identifier["StudyInstanceUID"], row.identifier.get("SeriesInstanceUID"))
            for row in job.items.order_by("row")
        ]

    assert rows(modality="ct") == [("1.1", None), ("1.3", None)]
    assert rows(description="chest") == [("1.1", None)]
    assert rows(description="coronal") == [("1.1", None)]
    assert rows(description="*axial*", level="SERIES") == [
        ("1.1", "1.1.1"), ("1.2", "1.2.1"), ("1.3", "1.3.1"),
    ]  # fmt: skip
    assert rows(description="axial ?mm", level="SERIES") == [("1.1", "1.1.1"), ("1.3", "1.3.1")]
    assert rows(date_from=date(2021, 1, 1), date_to=date(2021, 12, 31)) == [("1.2", None)]
    assert rows(description="CT*", modality="CT", date_from=date(2021, 1, 1)) == [("1.3", None)]
    with pytest.raises(ValidationError, match="No matches to retrieve with these filters"):
        rows(description="chest*", level="SERIES", modality="MR")
    # LIKE's own characters stand for themselves; * and ? are the only wildcards.
    assert rows(description="100% dose_?") == [("1.4", None)]
    with pytest.raises(ValidationError, match="No matches"):
        rows(description="100_ dose*")
    # A pattern that makes a backtracking regular expression take hours on a
    # 64-character description: the database's LIKE answers at once. (Generous:
    # it tells hours from a query; a busy machine does not make it a minute.)
    started = time.monotonic()
    with pytest.raises(ValidationError, match="No matches"):
        rows(description="*a*a*a*a*a*a*a*a*a*a*a*a*b")
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("method", ["move", "get"])
def test_a_series_retrieval_takes_only_that_series(
    method, pacs_node, storage, alice, project, dicom_data
):
    series_uid, instances = sorted(dicom_data.series.items())[0]
    rows = [
        {
            "QueryRetrieveLevel": "SERIES",
            "StudyInstanceUID": instances[0].study_instance_uid,
            "SeriesInstanceUID": series_uid,
        }
    ]
    job = job_create(kind=method, owner=alice, project=project, node=pacs_node, rows=rows)
    job = run_inline(job, **QUIET)
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    assert_project_holds_exactly(project, instances, storage, dicom_data)


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


def test_a_failed_retrieval_row_retried_completes_with_each_instance_once(
    storage, alice, project, dicom_data, settings
):
    """Retry failed rows: a C-GET row that gave up with instances missing is
    worked again with fresh attempts once the PACS has them all; the project
    then holds every instance once, and the row counts them all."""
    settings.PACSNPULL_MAX_ATTEMPTS = 1
    study_uid, instances = sorted(dicom_data.studies.items())[4]
    n = len(instances)
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances], behaviour="withhold", destinations={}
    ) as pacs:
        node = make_node("LIAR", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = run_inline(retrieval_job(alice, project, node, [study_uid], kind="get"), **QUIET)
        item = job.items.get()
        assert (job.status, item.status) == (JobStatus.FAILED, ItemStatus.FAILED)
        assert (item.instances_expected, item.instances_received) == (n, n - 2)

        pacs.behaviour = "honest"  # the PACS has its instances back
        assert job_retry_failed(job=job, user=alice) == 1
        job = run_inline(job, **QUIET)
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    item = job.items.get()
    assert (item.status, item.attempts, item.error_message) == (ItemStatus.DONE, 1, "")
    assert (item.instances_expected, item.instances_received) == (n, n)
    assert_project_holds_exactly(project, instances, storage, dicom_data)
    assert AuditEvent.objects.filter(action=AuditAction.JOB_RETRIED, job=job).exists()


def test_instances_a_pacs_sends_twice_are_in_the_project_once(storage, alice, project, dicom_data):
    """A C-GET that sends some instances twice (PACS with duplicates do) ends
    done, with each instance once on disk, in the row's counts and in the
    project's records (on PostgreSQL one statement records a row's instances,
    and may not record one twice)."""
    study_uid, instances = sorted(dicom_data.studies.items())[2]
    with ScriptedPacs(
        [dicom_data.root / i.path for i in instances], behaviour="resend", destinations={}
    ) as pacs:
        node = make_node("TWICE", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = run_inline(retrieval_job(alice, project, node, [study_uid], kind="get"), **QUIET)
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    item = job.items.get()
    assert (item.instances_expected, item.instances_received) == (len(instances), len(instances))
    assert_project_holds_exactly(project, instances, storage, dicom_data)
    on_disk = sum(p.stat().st_size for p in (storage / project.slug).rglob("*.dcm"))
    assert item.bytes_received == on_disk  # the instances sent twice counted once


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
    assert_project_holds_exactly(project, dicom_data.studies[study_uid], storage, dicom_data)


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
        == "path,PatientID,StudyInstanceUID,SeriesInstanceUID,SOPInstanceUID,Modality,bytes,"
        "SOPClassUID,TransferSyntaxUID,burned-in text"
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
    from pulls.workers.runner import run_chunk

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


def test_a_retrieval_is_not_started_without_free_space_and_says_what_to_do(
    client, storage, settings, alice, project, orthanc_node, dicom_data
):
    """Free space is checked before a retrieval starts: below
    PACSNPULL_MIN_FREE_BYTES the job stays a draft, nothing is queued or
    sent, and the page says how much is free and what to do."""
    settings.PACSNPULL_MIN_FREE_BYTES = 10**18  # more than any disk here
    job = retrieval_job(alice, project, orthanc_node, sorted(dicom_data.studies)[:2], kind="get")
    client.force_login(alice)
    page = client.post(f"/jobs/{job.code}/start/", follow=True).content.decode()
    assert "Not started: only" in page
    assert "MB free on the disk of" in page
    assert "free some space, then start the job." in page
    job.refresh_from_db()
    assert job.status == JobStatus.DRAFT
    assert set(job.items.values_list("status", "queued_at")) == {(ItemStatus.PENDING, None)}


@pytest.mark.parametrize("kind", [JobKind.MOVE, JobKind.GET])
def test_a_full_disk_pauses_the_job_and_resume_finishes_it(
    kind, orthanc, staging, settings, tmp_path, alice, project, dicom_data
):
    """In the test's transaction: rows are finished inline (see RowFinisher). A
    C-MOVE's row is not started without the margin of free space; a C-GET
    fetches these small studies several at a time (study_lists), and the disk
    fills during one: either way the job pauses, saying so."""
    reason = "paused: only " if kind == JobKind.MOVE else "paused: the disk of "
    _a_full_disk_pauses_the_job_and_resume_finishes_it(
        orthanc, staging, settings, tmp_path, alice, project, dicom_data, reason=reason,
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
    assert_project_holds_exactly(project, instances, storage, dicom_data)
