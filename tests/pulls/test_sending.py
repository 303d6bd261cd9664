"""Sending a project's files to a destination node (pulls.delivery.sending):
a second Orthanc and DCMTK's dcmqrscp as destinations, the counts and bytes
they hold afterwards, conversion only where the destination accepts nothing
else, the destination's limits, access, the job that names a destination, and
`move --send-to`."""

from __future__ import annotations

import json

import pytest
from django.core.exceptions import ValidationError

from pulls.cli.inline import run_inline
from pulls.delivery import sending
from pulls.dicom.sending import read_meta
from pulls.models import (
    AuditAction,
    AuditEvent,
    JobStatus,
    PacsNode,
    Project,
    RetrievedInstance,
    Sending,
    SendingStatus,
    SentStudy,
)
from pulls.sandbox.dcmqrscp import Dcmqrscp
from tests.conftest import SCP_PORT, make_node, retrieval_job, wait_for
from tests.conftest import clear_orthanc as _clear
from tests.pulls.retrieval_support import QUIET

pytestmark = pytest.mark.services


def _destination(pacs_port: int, aet: str, *users, **fields) -> PacsNode:
    node = make_node(
        f"DEST-{aet}", pacs_port, aet, is_destination=True, connect_timeout=5, **fields
    )
    node.granted_users.add(*users)
    return node


def _retrieved(owner, project, node, studies, kind="get"):
    job = run_inline(retrieval_job(owner, project, node, studies, kind=kind), **QUIET)
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    return job


def _dataset_bytes(data: bytes) -> bytes:
    """A DICOM file's bytes after its file meta information."""
    length = int.from_bytes(data[140:144], "little")
    return data[144 + length :]


def test_a_jobs_files_arrive_at_the_destination_as_they_are_stored(
    storage, alice, project, orthanc_node, destination_orthanc, dicom_data
):
    _clear(destination_orthanc)
    studies = sorted(dicom_data.studies)[:2]
    job = _retrieved(alice, project, orthanc_node, studies)
    destination = _destination(destination_orthanc.dicom_port, "RESEARCH", alice)
    made = sending.sending_create(project=project, destination=destination, user=alice, job=job)
    assert sending.sending_run(made.pk) is None
    made.refresh_from_db()
    assert made.status == SendingStatus.DONE
    records = RetrievedInstance.objects.filter(project=project)
    assert destination_orthanc.instance_count() == records.count()
    for study in made.studies.all():
        expected = records.filter(study_instance_uid=study.study_instance_uid).count()
        assert (study.instances_sent, study.instances_at_destination) == (expected, expected)
        assert study.instances_converted == 0
    # Byte for byte as the project holds them: nothing decoded, nothing converted.
    by_sop = {r.sop_instance_uid: r for r in records}
    for orthanc_id in destination_orthanc.get("/instances"):
        tags = destination_orthanc.get(f"/instances/{orthanc_id}/simplified-tags")
        record = by_sop[tags["SOPInstanceUID"]]
        held = destination_orthanc.instance_file(orthanc_id)
        mine = (storage / project.slug / record.path).read_bytes()
        assert _dataset_bytes(held) == _dataset_bytes(mine)
    events = AuditEvent.objects.filter(action=AuditAction.SEND, job=job)
    assert events.count() == 1 + len(studies)  # queued, then one per study
    assert all(e.success and e.node == destination for e in events)


def test_the_corpus_is_converted_only_where_dcmqrscp_accepts_nothing_else(
    tmp_path, storage, alice, project, corpus_orthanc, corpus
):
    """dcmqrscp takes uncompressed syntaxes only: JPEG, JPEG-LS, RLE and deflate
    are converted losslessly by DCMTK; JPEG 2000 cannot be here, and
    the private class has no context: those fail, with the reason, the rest arrive."""
    node = make_node("CORPUS", corpus_orthanc.dicom_port, "ORTHANC", connect_timeout=5)
    node.granted_users.add(alice)
    syntaxes = next(i for i in corpus.instances if i.patient_id == "CORPUS-TS")
    job = _retrieved(alice, project, node, [syntaxes.study_instance_uid])
    receiver = Dcmqrscp(tmp_path / "dcmqrscp-destination", aet="DCMDEST").start()
    try:
        destination = _destination(receiver.port, "DCMDEST", alice)
        made = sending.sending_create(project=project, destination=destination, user=alice, job=job)
        sending.sending_run(made.pk)
        study = made.studies.get()
        files = [
            read_meta(storage / project.slug / r.path)
            for r in RetrievedInstance.objects.filter(project=project)
        ]
        j2k = [f for f in files if f.syntax in ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")]
        # dcmqrscp takes these as they are (big endian too): nothing to convert.
        native = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2"}
        converted = [f for f in files if f.syntax not in native and f not in j2k]
        assert j2k and converted
        assert study.instances_failed == len(j2k)
        assert study.instances_converted == len(converted)
        assert study.instances_sent == len(files) - len(j2k)
        assert study.status == SendingStatus.FAILED
        assert "cannot be converted here without loss" in study.message
        assert "1.2.840.10008.1.2.4.90" in study.message or j2k[0].sop_instance in study.message
        # What dcmqrscp holds: the instances sent, counted by its own C-FIND.
        assert study.instances_at_destination is None or study.instances_at_destination == (
            len(files) - len(j2k)
        )
        stored = list((tmp_path / "dcmqrscp-destination" / "db").rglob("*"))
        assert len([p for p in stored if p.is_file() and p.name != "index.dat"]) == (
            len(files) - len(j2k)
        )
    finally:
        receiver.stop()


def test_a_suspended_destination_holds_the_sending_back(
    storage, alice, project, orthanc_node, destination_orthanc, dicom_data
):
    _clear(destination_orthanc)
    job = _retrieved(alice, project, orthanc_node, sorted(dicom_data.studies)[:1])
    destination = _destination(destination_orthanc.dicom_port, "RESEARCH", alice, suspended=True)
    made = sending.sending_create(project=project, destination=destination, user=alice, job=job)
    wait = sending.sending_run(made.pk)
    assert wait is not None and "suspended" in wait.reason
    made.refresh_from_db()
    assert "suspended" in made.waiting_reason and made.status == SendingStatus.RUNNING
    assert destination_orthanc.instance_count() == 0
    PacsNode.objects.filter(pk=destination.pk).update(suspended=False)
    assert sending.sending_run(made.pk) is None
    assert destination_orthanc.instance_count() == job.instances_received


def test_who_may_send_and_where(
    client, storage, alice, bob, charlie, project, orthanc_node, destination_orthanc, dicom_data
):
    job = _retrieved(alice, project, orthanc_node, sorted(dicom_data.studies)[:1])
    destination = _destination(destination_orthanc.dicom_port, "RESEARCH", alice, bob)
    client.force_login(bob)  # a viewer reads, does not send
    assert (
        client.post(f"/jobs/{job.code}/send/", {"destination": destination.code}).status_code == 403
    )
    client.force_login(charlie)
    assert (
        client.post(f"/jobs/{job.code}/send/", {"destination": destination.code}).status_code == 404
    )
    client.force_login(alice)
    page = client.get(f"/jobs/{job.code}/").content.decode()
    assert f'value="{destination.code}"' in page
    # A node that is no destination (the PACS itself) is refused by name.
    response = client.post(
        f"/jobs/{job.code}/send/", {"destination": orthanc_node.code}, follow=True
    )
    assert "Choose a destination you may send to" in response.content.decode()
    with pytest.raises(ValidationError, match="not a destination you may send to"):
        sending.sending_create(project=project, destination=orthanc_node, user=alice, job=job)
    assert not Sending.objects.exists()


def test_a_job_that_names_a_destination_is_sent_when_it_ends(
    storage, alice, project, orthanc_node, destination_orthanc, dicom_data,
    django_capture_on_commit_callbacks,
):  # fmt: skip
    _clear(destination_orthanc)
    destination = _destination(destination_orthanc.dicom_port, "RESEARCH", alice)
    from pulls.services import job_create

    study = sorted(dicom_data.studies)[0]
    rows = [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study}]
    with pytest.raises(ValidationError, match="choose no destination"):
        job_create(kind="find", owner=alice, project=project, node=orthanc_node, rows=rows,
                   destination=destination)  # fmt: skip
    job = job_create(kind="get", owner=alice, project=project, node=orthanc_node, rows=rows,
                     destination=destination)  # fmt: skip
    sent: list[int] = []
    assert sending.queue_due(sent.append) == 0  # a draft: nothing to send yet
    run_inline(job, **QUIET)
    with django_capture_on_commit_callbacks(execute=True):
        assert sending.queue_due(sent.append) == 1
    assert sending.queue_due(sent.append) == 0  # once
    sending.sending_run(sent[0])
    assert SentStudy.objects.get().status == SendingStatus.DONE
    assert destination_orthanc.instance_count() == len(dicom_data.studies[study])


def test_the_page_sends_through_the_queue(
    client, celery_worker, tmp_path, alice, project, orthanc_node, destination_orthanc, dicom_data,
    settings, staging,
):  # fmt: skip
    _clear(destination_orthanc)
    Project.objects.filter(pk=project.pk).update(storage_path=str(tmp_path / "files"))
    project.refresh_from_db()
    settings.PACSNPULL_STAGING_DIR = staging
    settings.PACSNPULL_SCP_PORT = SCP_PORT
    job = _retrieved(alice, project, orthanc_node, sorted(dicom_data.studies)[:2])
    destination = _destination(destination_orthanc.dicom_port, "RESEARCH", alice)
    client.force_login(alice)
    response = client.post(
        f"/jobs/{job.code}/send/", {"destination": destination.code}, follow=True
    )
    assert "2 studies are queued to be sent to DEST-RESEARCH" in response.content.decode()
    made = Sending.objects.get()
    wait_for(
        lambda: Sending.objects.get(pk=made.pk).status == SendingStatus.DONE,
        timeout=60,
        what=f"the sending to end (worker log:\n{celery_worker.log_tail()})",
    )
    assert destination_orthanc.instance_count() == job.instances_received
    page = client.get(f"/jobs/{job.code}/").content.decode()
    assert 'id="sendings"' in page and "2 / 2" in page
    # The worker's application log names no patient (the audit log does).
    log = celery_worker.log_path.read_text(errors="replace")
    assert "send_studies" in log
    for inst in dicom_data.instances:
        assert inst.patient_id not in log and inst.patient_name not in log


def test_a_pseudonymised_project_sends_pseudonymised_files_only(
    storage, alice, orthanc_node, destination_orthanc, dicom_data
):
    from pulls.models import Membership, Role

    _clear(destination_orthanc)
    project = Project.objects.create(name="Pseudo send", slug="pseudo-send")
    Membership.objects.create(project=project, user=alice, role=Role.OWNER)
    study = sorted(dicom_data.studies)[0]
    job = _retrieved(alice, project, orthanc_node, [study])
    destination = _destination(destination_orthanc.dicom_port, "RESEARCH", alice)
    made = sending.sending_create(project=project, destination=destination, user=alice, job=job)
    sending.sending_run(made.pk)
    assert made.studies.get().status == SendingStatus.DONE
    original = dicom_data.studies[study][0]
    held = [
        destination_orthanc.get(f"/instances/{i}/simplified-tags")
        for i in destination_orthanc.get("/instances")
    ]
    assert len(held) == len(dicom_data.studies[study])
    assert {h["PatientID"] for h in held} == {
        RetrievedInstance.objects.filter(project=project).first().patient_id
    }
    assert all(h["PatientID"] != original.patient_id for h in held)
    assert all(h["StudyInstanceUID"] != study for h in held)
    assert all(original.patient_name not in json.dumps(h) for h in held)


def test_an_operator_marks_a_destination_in_the_admin(client, operator):
    client.force_login(operator)
    page = client.get("/admin/pulls/pacsnode/add/").content.decode()
    assert 'name="is_destination"' in page


def test_a_job_still_running_is_not_sent(
    storage, alice, project, orthanc_node, destination_orthanc
):
    from pulls.models import Job

    job = retrieval_job(alice, project, orthanc_node, ["1.2.3"])
    Job.objects.filter(pk=job.pk).update(status=JobStatus.RUNNING)
    job.refresh_from_db()
    destination = _destination(destination_orthanc.dicom_port, "RESEARCH", alice)
    with pytest.raises(ValidationError, match="send its files when it has ended"):
        sending.sending_create(project=project, destination=destination, user=alice, job=job)
    assert not Sending.objects.exists()


def test_a_destination_that_is_down_is_tried_again_then_given_up_on(
    storage, settings, alice, project, orthanc_node, destination_orthanc, dicom_data
):
    from pulls.sandbox.procs import free_port

    _clear(destination_orthanc)
    job = _retrieved(alice, project, orthanc_node, sorted(dicom_data.studies)[:1])
    down = _destination(free_port(), "DOWN", alice)
    made = sending.sending_create(project=project, destination=down, user=alice, job=job)
    for attempt in range(1, settings.PACSNPULL_MAX_ATTEMPTS):
        wait = sending.sending_run(made.pk)
        assert wait is not None and "could not connect" in wait.reason
        study = made.studies.get()
        assert (study.status, study.attempts) == (SendingStatus.QUEUED, attempt)
    # It comes back before the last attempt: the study arrives.
    PacsNode.objects.filter(pk=down.pk).update(
        port=destination_orthanc.dicom_port, ae_title="RESEARCH"
    )
    assert sending.sending_run(made.pk) is None
    assert made.studies.get().status == SendingStatus.DONE
    assert destination_orthanc.instance_count() == job.instances_received

    gone = _destination(free_port(), "GONE", alice)
    again = sending.sending_create(project=project, destination=gone, user=alice, job=job)
    while sending.sending_run(again.pk) is not None:
        pass
    study = again.studies.get()
    assert study.status == SendingStatus.FAILED
    assert study.message.startswith(f"gave up after {settings.PACSNPULL_MAX_ATTEMPTS} attempts")


def test_a_grant_withdrawn_after_the_sending_was_queued_stops_it(
    storage, alice, project, orthanc_node, destination_orthanc, dicom_data
):
    _clear(destination_orthanc)
    job = _retrieved(alice, project, orthanc_node, sorted(dicom_data.studies)[:1])
    destination = _destination(destination_orthanc.dicom_port, "RESEARCH", alice)
    made = sending.sending_create(project=project, destination=destination, user=alice, job=job)
    destination.granted_users.remove(alice)  # before a worker takes it
    assert sending.sending_run(made.pk) is None
    made.refresh_from_db()
    study = made.studies.get()
    assert made.status == SendingStatus.FAILED and study.status == SendingStatus.FAILED
    assert (
        study.message.startswith("not sent:")
        and "not a destination you may send to" in study.message
    )
    assert destination_orthanc.instance_count() == 0
