"""Instances nobody asked for go to quarantine and the audit log, never into a project."""

import os
import shutil
import time

from pulls.models import AuditAction, AuditEvent, JobKind
from pulls.quarantine import staging_sweep
from pulls.services import job_create
from tests.conftest import make_node


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
