"""Instances nobody asked for go to quarantine and the audit log, never into a project."""

import contextlib
import os
import shutil
import time

import pytest

from pulls.cli.inline import run_inline
from pulls.dicom.receiving import UNREQUESTED
from pulls.models import AuditAction, AuditEvent, JobKind, JobStatus
from pulls.retrieval.quarantine import staging_sweep
from pulls.services import job_create
from tests.conftest import make_node, retrieval_job, small_tmpfs
from tests.pulls.retrieval_support import QUIET, assert_project_holds_exactly
from tests.pulls.scripted_pacs import ScriptedPacs


def _stage(staging, dicom_data, index: int, *, age: float):
    study, instances = sorted(dicom_data.studies.items())[index]
    folder = staging / study
    folder.mkdir(parents=True)
    for inst in instances:
        target = folder / f"{inst.sop_instance_uid}.dcm"
        shutil.copy(dicom_data.root / inst.path, target)
        os.utime(target, (time.time() - age, time.time() - age))
    return study, instances


def test_unrequested_instances_are_quarantined_and_audited(
    settings, tmp_path, alice, project, dicom_data
):
    staging = tmp_path / "staging"
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_QUARANTINE_DIR = tmp_path / "quarantine"
    settings.PACSNPULL_QUARANTINE_AFTER_SECONDS = 600
    stray, stray_instances = _stage(staging, dicom_data, 0, age=3600)
    wanted, _ = _stage(staging, dicom_data, 1, age=3600)
    fresh, _ = _stage(staging, dicom_data, 2, age=5)
    (staging / ".incoming").mkdir()
    partial = staging / ".incoming" / ".incoming-123-4.part"
    partial.write_bytes(b"half an instance")
    os.utime(partial, (time.time() - 3600, time.time() - 3600))
    node = make_node("N", 104, "N")
    node.granted_users.add(alice)
    job_create(
        kind=JobKind.MOVE,
        owner=alice,
        project=project,
        node=node,
        rows=[{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": wanted}],
        start=True,
    )

    counts = staging_sweep()

    assert counts == {"studies": 1, "instances": len(stray_instances), "partial_removed": 1}
    quarantined = list((tmp_path / "quarantine").rglob("*.dcm"))
    assert {p.stem for p in quarantined} == {i.sop_instance_uid for i in stray_instances}
    assert not (staging / stray).exists()
    assert (staging / wanted).is_dir() and (staging / fresh).is_dir()
    assert not partial.exists()
    event = AuditEvent.objects.get(action=AuditAction.QUARANTINE)
    assert (event.target, event.details["instances"]) == (stray, len(stray_instances))


def test_placed_studies_leave_no_folders_and_cut_writes_no_parts(settings, tmp_path, db):
    staging = tmp_path / "staging"
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_QUARANTINE_DIR = tmp_path / "quarantine"
    settings.PACSNPULL_QUARANTINE_AFTER_SECONDS = 600
    old = time.time() - 3600
    placed = staging / "1.2.3"  # every instance placed: only the emptied index is left
    placed.mkdir(parents=True)
    (placed / ".keys").write_bytes(b"")
    crashed = staging / "1.2.4"  # the SCP died while writing an instance
    crashed.mkdir()
    (crashed / ".incoming-77-0.part").write_bytes(b"half")
    recent = staging / "1.2.5"  # still being written to
    recent.mkdir()
    (recent / ".keys").write_bytes(b"")
    for path in (placed / ".keys", placed, crashed / ".incoming-77-0.part", crashed):
        os.utime(path, (old, old))

    counts = staging_sweep()

    assert counts == {"studies": 0, "instances": 0, "partial_removed": 1}
    assert not placed.exists() and not crashed.exists()
    assert recent.is_dir()
    assert not (tmp_path / "quarantine").exists()
    assert not AuditEvent.objects.filter(action=AuditAction.QUARANTINE).exists()


@pytest.mark.parametrize("quarantine_on", ["the same disk", "another file system"])
def test_a_c_get_keeps_what_it_did_not_ask_for_out_of_the_project(
    quarantine_on, storage, settings, tmp_path, alice, project, dicom_data
):
    """A C-GET writes straight into the project; a PACS that sends another
    study's instances with the one asked for does not get them there: they go
    to quarantine at once (across file systems too), with an audit event
    naming the job, and the row counts only its own."""
    with contextlib.ExitStack() as stack:
        if quarantine_on == "another file system":
            stack.enter_context(small_tmpfs(tmp_path / "quarantine", "4m"))
        _c_get_with_another_study_along(storage, settings, tmp_path, alice, project, dicom_data)


def _c_get_with_another_study_along(storage, settings, tmp_path, alice, project, dicom_data):
    settings.PACSNPULL_QUARANTINE_DIR = tmp_path / "quarantine"
    (asked, asked_instances), (other, other_instances) = sorted(dicom_data.studies.items())[:2]
    files = [dicom_data.root / i.path for i in [*asked_instances, *other_instances]]
    with ScriptedPacs(files, behaviour="extra", withhold=2, destinations={}) as pacs:
        node = make_node("GENEROUS", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        job = run_inline(retrieval_job(alice, project, node, [asked], kind="get"), **QUIET)

    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    item = job.items.get()
    n = len(asked_instances)
    assert (item.instances_expected, item.instances_received) == (n, n)
    assert_project_holds_exactly(project, asked_instances, storage, dicom_data)
    assert not [p for p in (storage / project.slug / UNREQUESTED).rglob("*") if p.is_file()]
    quarantined = list((tmp_path / "quarantine").rglob("*.dcm"))
    assert {p.stem for p in quarantined} == {i.sop_instance_uid for i in other_instances[:2]}
    event = AuditEvent.objects.get(action=AuditAction.QUARANTINE)
    assert (event.job_id, event.target, event.details["instances"]) == (job.pk, other, 2)
    assert "did not ask for" in event.message


def test_what_a_dead_worker_left_unrequested_is_quarantined_by_the_sweep(
    storage, settings, tmp_path, project, dicom_data
):
    """A worker killed between a C-GET and setting aside what it did not ask
    for leaves those files in the project's .unrequested folder: the
    reconciler's sweep moves them to quarantine once they are old enough."""
    settings.PACSNPULL_QUARANTINE_DIR = tmp_path / "quarantine"
    settings.PACSNPULL_QUARANTINE_AFTER_SECONDS = 600
    unrequested = project.storage_dir / UNREQUESTED
    (old, old_instances), (fresh, fresh_instances) = sorted(dicom_data.studies.items())[:2]
    for study, instances, age in ((old, old_instances, 3600), (fresh, fresh_instances, 5)):
        (unrequested / study).mkdir(parents=True)
        for inst in instances:
            target = unrequested / study / f"{inst.sop_instance_uid}.dcm"
            shutil.copy(dicom_data.root / inst.path, target)
            os.utime(target, (time.time() - age, time.time() - age))

    (unrequested / ".DS_Store").write_bytes(b"")  # a stray file does not stop the sweep

    counts = staging_sweep()

    assert counts["studies"] == 1 and counts["instances"] == len(old_instances)
    quarantined = list((tmp_path / "quarantine").rglob("*.dcm"))
    assert {p.stem for p in quarantined} == {i.sop_instance_uid for i in old_instances}
    assert not (unrequested / old).exists()
    assert len(list((unrequested / fresh).iterdir())) == len(fresh_instances)
    event = AuditEvent.objects.get(action=AuditAction.QUARANTINE)
    assert (event.target, event.details["instances"]) == (old, len(old_instances))


def test_a_study_sent_to_the_storage_scp_that_no_job_asked_for_ends_in_quarantine(
    orthanc, staging, settings, tmp_path, db, dicom_data
):
    """A misdirected C-MOVE: Orthanc sends a study to the portal's storage SCP
    that no retrieval asked for. It stays out of every project, and once older
    than PACSNPULL_QUARANTINE_AFTER_SECONDS the reconciler's sweep puts it in
    quarantine with an audit event."""
    from pulls.dicom import Session
    from pulls.dicom.identifiers import retrieve_identifier
    from tests.conftest import peer_for

    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_STORAGE_ROOT = tmp_path / "storage"
    settings.PACSNPULL_QUARANTINE_DIR = tmp_path / "quarantine"
    settings.PACSNPULL_QUARANTINE_AFTER_SECONDS = 600
    study, instances = sorted(dicom_data.studies.items())[5]
    with Session(peer_for(orthanc.dicom_port, "ORTHANC"), services=("move",)) as session:
        result = session.move(
            retrieve_identifier({"StudyInstanceUID": study}, model="S"),
            destination=settings.PACSNPULL_AE_TITLE,
        )
    assert (result.status, result.completed) == (0, len(instances))

    assert staging_sweep()["instances"] == 0  # too recent: a retrieval may still claim it
    counts = staging_sweep(now=time.time() + 601)

    assert (counts["studies"], counts["instances"]) == (1, len(instances))
    quarantined = list((tmp_path / "quarantine").rglob("*.dcm"))
    assert {p.stem for p in quarantined} == {i.sop_instance_uid for i in instances}
    assert not list((tmp_path / "storage").rglob("*.dcm"))
    event = AuditEvent.objects.get(action=AuditAction.QUARANTINE)
    assert (event.target, event.details["instances"]) == (study, len(instances))


def test_a_series_c_get_keeps_the_other_series_of_the_study_out_of_the_project(
    storage, settings, tmp_path, alice, project, dicom_data
):
    """A PACS that answers a SERIES-level C-GET with the whole study: the row's
    series goes into the project, the study's other series to quarantine."""
    from pulls.models import FindResult
    from pulls.services import retrieval_create_from_find

    settings.PACSNPULL_QUARANTINE_DIR = tmp_path / "quarantine"
    study, in_study = sorted(dicom_data.studies.items())[0]
    series = sorted({i.series_instance_uid for i in in_study})[0]
    wanted = [i for i in in_study if i.series_instance_uid == series]
    others = [i for i in in_study if i.series_instance_uid != series]
    assert wanted and others
    with ScriptedPacs(  # its C-GET sends the whole study, whatever the level
        [dicom_data.root / i.path for i in in_study], behaviour="honest", destinations={}
    ) as pacs:
        node = make_node("WHOLE", pacs.port, pacs.ae_title)
        node.granted_users.add(alice)
        find = job_create(
            kind=JobKind.FIND,
            owner=alice,
            project=project,
            node=node,
            rows=[{"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": study}],
        )
        FindResult.objects.create(
            job=find,
            item=find.items.get(),
            attributes={"NumberOfSeriesRelatedInstances": str(len(wanted))},
            patient_id=wanted[0].patient_id,
            study_instance_uid=study,
            series_instance_uid=series,
        )
        job = retrieval_create_from_find(find_job=find, user=alice, method="get", level="SERIES")
        job = run_inline(job, **QUIET)

    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    item = job.items.get()
    assert (item.instances_expected, item.instances_received) == (len(wanted), len(wanted))
    assert_project_holds_exactly(project, wanted, storage, dicom_data)
    quarantined = list((tmp_path / "quarantine").rglob("*.dcm"))
    assert {p.stem for p in quarantined} == {i.sop_instance_uid for i in others}
    event = AuditEvent.objects.get(action=AuditAction.QUARANTINE)
    assert (event.job_id, event.target, event.details["instances"]) == (job.pk, study, len(others))
