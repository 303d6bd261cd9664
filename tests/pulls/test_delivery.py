"""Delivery (pulls.delivery): a job's, ticked rows' or a project's files as a
streamed ZIP, read back by Python's zipfile; deleting them by an owner or by the
project's retention; NIfTI by dcm2niix, opened with nibabel."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from datetime import timedelta

import nibabel
import pytest
from django.utils import timezone

from pulls.cli.inline import run_inline
from pulls.delivery import deletion, nifti
from pulls.models import (
    AuditAction,
    AuditEvent,
    Job,
    JobStatus,
    Membership,
    NiftiSeries,
    Project,
    RetrievedInstance,
    Role,
)
from tests.conftest import make_node, retrieval_job
from tests.pulls.leaks import collect, leaks
from tests.pulls.retrieval_support import QUIET

pytestmark = pytest.mark.services


def _retrieved(owner, project, node, studies, kind="move") -> Job:
    job = run_inline(retrieval_job(owner, project, node, studies, kind=kind), **QUIET)
    assert job.status == JobStatus.DONE, list(job.items.values_list("error_message", flat=True))
    return job


def _zip(response) -> zipfile.ZipFile:
    assert response.status_code == 200, response
    assert response["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def _studies(dicom_data, n: int) -> list[str]:
    return sorted(dicom_data.studies)[:n]


@pytest.fixture
def member(db, project):
    from accounts.models import User

    user = User.objects.create_user("mia", password="mia-password-1")
    Membership.objects.create(project=project, user=user, role=Role.MEMBER)
    return user


def test_a_jobs_files_download_as_a_zip_with_the_projects_layout_and_manifest(
    client, storage, alice, project, orthanc_node, dicom_data
):
    studies = _studies(dicom_data, 2)
    job = _retrieved(alice, project, orthanc_node, studies)
    client.force_login(alice)
    page = client.get(f"/jobs/{job.code}/").content.decode()
    assert f"/jobs/{job.code}/files.zip" in page

    archive = _zip(client.get(f"/jobs/{job.code}/files.zip"))
    folder = f"pacsnpull-{project.slug}-{str(job.code)[:8]}"
    records = RetrievedInstance.objects.filter(project=project)
    expected = {f"{folder}/{r.path}" for r in records} | {f"{folder}/manifest.csv"}
    assert set(archive.namelist()) == expected
    assert archive.testzip() is None  # every CRC right
    for record in records:
        assert (
            archive.read(f"{folder}/{record.path}")
            == (storage / project.slug / record.path).read_bytes()
        )
    manifest = list(csv.DictReader(io.StringIO(archive.read(f"{folder}/manifest.csv").decode())))
    assert {row["SOPInstanceUID"] for row in manifest} == {r.sop_instance_uid for r in records}
    assert {row["StudyInstanceUID"] for row in manifest} == set(studies)

    event = AuditEvent.objects.get(action=AuditAction.DOWNLOAD, job=job)
    assert event.actor == alice
    assert event.details["instances"] == records.count()
    assert event.details["studies"] == 2
    assert event.details["bytes"] == sum(r.size for r in records)


def test_the_ticked_rows_download_only_their_studies(
    client, storage, alice, project, orthanc_node, dicom_data
):
    studies = _studies(dicom_data, 3)
    job = _retrieved(alice, project, orthanc_node, studies)
    second = job.items.get(row=2).identifier["StudyInstanceUID"]
    client.force_login(alice)
    page = client.get(f"/jobs/{job.code}/").content.decode()
    assert 'name="row" value="2" form="ticked-form"' in page

    archive = _zip(client.get(f"/jobs/{job.code}/files.zip?row=2"))
    dicoms = [name for name in archive.namelist() if name.endswith(".dcm")]
    assert len(dicoms) == len(dicom_data.studies[second])
    assert all(f"/{second}/" in name for name in dicoms)
    assert AuditEvent.objects.get(action=AuditAction.DOWNLOAD, job=job).details["rows"] == [2]

    # A value that is no row number: the job page says so, no ZIP, no event.
    for bad in ("2;rm", "-1", "99999999999999999999"):
        response = client.get(f"/jobs/{job.code}/files.zip?row={bad}", follow=True)
        assert "must be row numbers" in response.content.decode(), bad
    assert AuditEvent.objects.filter(action=AuditAction.DOWNLOAD).count() == 1


def test_who_may_download(
    client, storage, alice, bob, charlie, member, project, orthanc_node, dicom_data
):
    job = _retrieved(alice, project, orthanc_node, _studies(dicom_data, 1))
    url = f"/jobs/{job.code}/files.zip"
    assert client.get(url).status_code == 302  # anonymous: to the login page
    assert "/accounts/login/" in client.get(url)["Location"]
    client.force_login(charlie)  # outsider: the job does not exist for him
    assert client.get(url).status_code == 404
    assert client.get(f"/projects/{project.slug}/files.zip").status_code == 404
    client.force_login(bob)  # viewer: a download is a read
    assert len(_zip(client.get(url)).namelist()) > 1
    client.force_login(member)
    assert client.get(f"/projects/{project.slug}/files.zip").status_code == 200

    project.viewers_may_download = False
    project.save()
    client.force_login(bob)
    assert client.get(url).status_code == 403
    assert client.get(f"/projects/{project.slug}/files.zip").status_code == 403
    assert "files.zip" not in client.get(f"/jobs/{job.code}/").content.decode()
    assert AuditEvent.objects.filter(action=AuditAction.DOWNLOAD, actor=bob).count() == 1
    # Viewers and members do not change the delivery settings.
    for user in (bob, member):
        client.force_login(user)
        assert (
            client.post(f"/projects/{project.slug}/delivery/", {"nifti": "on"}).status_code == 403
        )


def test_a_zip_past_4_gb_is_zip64_and_reads_back(client, tmp_path, settings, alice, project):
    """Sparse files of 2.2 GB each: no disk used, ZIP64 needed for the offsets,
    and the ZIP written sparse (its zero runs skipped) to be read back."""
    settings.PACSNPULL_STORAGE_ROOT = tmp_path / "storage"
    big = 2_200_000_000
    for n in range(2):
        path = project.storage_dir / "P" / "1.2" / f"1.2.{n}" / f"1.2.{n}.1.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as fh:
            fh.truncate(big)
        RetrievedInstance.objects.create(
            project=project,
            path=str(path.relative_to(project.storage_dir)),
            patient_id="P",
            study_instance_uid="1.2",
            series_instance_uid=f"1.2.{n}",
            sop_instance_uid=f"1.2.{n}.1",
            size=big,
        )
    client.force_login(alice)
    response = client.get(f"/projects/{project.slug}/files.zip")
    assert response.status_code == 200
    out = tmp_path / "big.zip"
    with open(out, "wb") as fh:
        for chunk in response.streaming_content:
            if chunk.count(0) == len(chunk):
                fh.seek(len(chunk), io.SEEK_CUR)
            else:
                fh.write(chunk)
        fh.truncate()
    assert out.stat().st_size > 4 * 1024**3
    with zipfile.ZipFile(out) as archive:
        infos = {info.filename: info for info in archive.infolist()}
        second = infos[f"pacsnpull-{project.slug}/P/1.2/1.2.1/1.2.1.1.dcm"]
        assert second.file_size == big
        assert second.header_offset > 2**32 - 1 or second.file_size + big > 2**32
        with archive.open(second) as member:  # reads past 4 GB, checks the CRC
            while member.read(1 << 24):
                pass
        assert archive.read(f"pacsnpull-{project.slug}/manifest.csv").count(b"\n") == 3


def test_an_owner_deletes_a_jobs_files_and_the_records_say_so(
    client, storage, alice, bob, member, project, orthanc_node, dicom_data
):
    studies = _studies(dicom_data, 2)
    job = _retrieved(alice, project, orthanc_node, studies)
    kept = _retrieved(alice, project, orthanc_node, _studies(dicom_data, 3)[2:])
    files = RetrievedInstance.objects.filter(project=project, study_instance_uid__in=studies)
    paths = [storage / project.slug / r.path for r in files]
    assert all(p.is_file() for p in paths)

    for user in (bob, member):  # viewers and members do not delete
        client.force_login(user)
        assert client.post(f"/jobs/{job.code}/files/delete/").status_code == 403
    assert all(p.is_file() for p in paths)

    client.force_login(alice)
    confirm = client.get(f"/jobs/{job.code}/files/delete/").content.decode()
    assert f"{len(paths)} files of 2 studies" in confirm
    response = client.post(f"/jobs/{job.code}/files/delete/", follow=True)
    assert f"{len(paths)} files" in response.content.decode()
    assert not any(p.exists() for p in paths)
    assert not any(p.parent.exists() for p in paths)  # the emptied folders go too
    assert not RetrievedInstance.objects.filter(study_instance_uid__in=studies).exists()
    assert RetrievedInstance.objects.filter(project=project).count() == len(
        dicom_data.studies[_studies(dicom_data, 3)[2]]
    )
    job.refresh_from_db()
    assert job.files_deleted_by == "alice" and job.files_deleted_at is not None
    page = client.get(f"/jobs/{job.code}/").content.decode()
    assert "The files were deleted on" in page and "by alice" in page
    event = AuditEvent.objects.get(action=AuditAction.FILES_DELETED, job=job)
    assert (event.actor, event.details["instances"], event.success) == (alice, len(paths), True)
    # Nothing left to download: the page says why instead of an empty ZIP.
    response = client.get(f"/jobs/{job.code}/files.zip", follow=True)
    assert "were deleted on" in response.content.decode()
    kept.refresh_from_db()
    assert kept.files_deleted_at is None


def test_files_are_not_deleted_while_a_retrieval_of_the_project_runs(
    client, storage, alice, project, orthanc_node, dicom_data
):
    job = _retrieved(alice, project, orthanc_node, _studies(dicom_data, 1))
    retrieval_job(alice, project, orthanc_node, _studies(dicom_data, 2)[1:], start=False)
    Job.objects.filter(project=project, status=JobStatus.DRAFT).update(status=JobStatus.QUEUED)
    client.force_login(alice)
    response = client.post(f"/projects/{project.slug}/files/delete/", follow=True)
    assert "still queued, running or paused" in response.content.decode()
    assert RetrievedInstance.objects.filter(project=project).count() > 0
    assert not AuditEvent.objects.filter(action=AuditAction.FILES_DELETED).exists()
    job.refresh_from_db()
    assert job.files_deleted_at is None


def test_the_projects_retention_deletes_old_jobs_files_only(
    storage, alice, project, orthanc_node, dicom_data
):
    old = _retrieved(alice, project, orthanc_node, _studies(dicom_data, 1))
    recent = _retrieved(alice, project, orthanc_node, _studies(dicom_data, 2)[1:])
    Job.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=10))
    assert deletion.apply_retention()["jobs"] == 0  # no retention set: nothing goes

    project.retention_days = 7
    project.save()
    counts = deletion.apply_retention()
    assert counts["jobs"] == 1
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.files_deleted_by == "retention" and recent.files_deleted_at is None
    left = set(RetrievedInstance.objects.values_list("study_instance_uid", flat=True))
    assert left == {_studies(dicom_data, 2)[1]}
    event = AuditEvent.objects.get(action=AuditAction.FILES_DELETED, job=old)
    assert event.actor_label == "retention" and "retention of 7 days" in event.target
    # The retention change itself is audited, as every project setting is.
    assert AuditEvent.objects.filter(
        action=AuditAction.PROJECT_CHANGED, target__contains="retention_days"
    ).exists()
    assert deletion.apply_retention()["jobs"] == 0  # done once


def test_each_series_becomes_nifti_with_its_sidecar(
    storage, alice, project, orthanc_node, dicom_data
):
    project.nifti = True
    project.save()
    studies = _studies(dicom_data, 1)
    job = _retrieved(alice, project, orthanc_node, studies)
    assert list(nifti.jobs_due()) == [job]
    counts = nifti.convert_job(job)
    series = {i.series_instance_uid: i for i in dicom_data.studies[studies[0]]}
    assert counts == {"converted": len(series), "not_converted": 0}
    for uid, inst in series.items():
        converted = NiftiSeries.objects.get(project=project, series_instance_uid=uid)
        folder = storage / project.slug / "nifti" / converted.folder
        assert converted.folder == f"{inst.patient_id}/{inst.study_instance_uid}/{uid}"
        image = nibabel.load(folder / "series.nii.gz")
        assert image.shape[2] == len(dicom_data.series[uid])
        sidecar = json.loads((folder / "series.json").read_text())
        assert sidecar["Modality"] == inst.modality
        assert not [p for p in folder.parent.iterdir() if p.name.startswith(".converting")]
    assert list(nifti.jobs_due()) == []


def test_a_project_zip_holds_the_nifti_and_deleting_takes_it_too(
    client, storage, alice, project, orthanc_node, dicom_data
):
    project.nifti = True
    project.save()
    job = _retrieved(alice, project, orthanc_node, _studies(dicom_data, 1))
    nifti.convert_job(job)
    client.force_login(alice)
    names = _zip(client.get(f"/projects/{project.slug}/files.zip")).namelist()
    assert any(name.endswith("series.nii.gz") and "/nifti/" in name for name in names)
    client.post(f"/projects/{project.slug}/files/delete/")
    assert not NiftiSeries.objects.filter(project=project).exists()
    assert not list((storage / project.slug).rglob("*.nii.gz"))


def test_series_dcm2niix_does_not_convert_are_listed_with_the_reason(
    client, storage, project, alice, corpus_orthanc, corpus
):
    """The corpus's radiotherapy study: the CT converts; SR, PDF, plan,
    structure set, key objects, presentation state and raw data are listed."""
    node = make_node("CORPUS-ORTHANC", corpus_orthanc.dicom_port, "ORTHANC", connect_timeout=5)
    node.granted_users.add(alice)
    project.nifti = True
    project.save()
    rt = next(i for i in corpus.instances if i.patient_id == "CORPUS-RT")
    job = _retrieved(alice, project, node, [rt.study_instance_uid])
    counts = nifti.convert_job(job)
    reasons = dict(
        NiftiSeries.objects.filter(project=project).values_list("series_instance_uid", "reason")
    )
    assert counts["converted"] >= 1 and counts["not_converted"] >= 3
    sr = next(i for i in corpus.instances if i.label == "sr")
    pdf = next(i for i in corpus.instances if i.label == "encapsulated-pdf")
    assert reasons[sr.series_instance_uid] == "not an image (Comprehensive SR Storage)"
    assert reasons[pdf.series_instance_uid] == "not an image (Encapsulated PDF Storage)"
    client.force_login(alice)
    page = client.get(f"/jobs/{job.code}/").content.decode()
    assert "not an image (Comprehensive SR Storage)" in page


def test_a_pseudonymised_project_converts_its_pseudonymised_files(
    storage, alice, orthanc_node, dicom_data
):
    project = Project.objects.create(name="Pseudo NIfTI", slug="pseudo-nifti", nifti=True)
    Membership.objects.create(project=project, user=alice, role=Role.OWNER)
    studies = _studies(dicom_data, 1)
    job = _retrieved(alice, project, orthanc_node, studies)
    nifti.convert_job(job)
    outputs = list((storage / project.slug / "nifti").rglob("*"))
    assert any(p.name == "series.nii.gz" for p in outputs)
    assert not any(studies[0] in str(p) for p in outputs)  # pseudonym UIDs in the paths
    sources = [dicom_data.root / i.path for i in dicom_data.studies[studies[0]]]
    assert leaks(collect(sources), storage / project.slug / "nifti") == []


def test_the_reconciler_queues_a_conversion_once(storage, alice, project, orthanc_node, dicom_data):
    project.nifti = True
    project.save()
    job = _retrieved(alice, project, orthanc_node, _studies(dicom_data, 1))
    sent: list[int] = []
    assert nifti.queue_due(sent.append) == 1
    assert nifti.queue_due(sent.append) == 0  # queued: not again while it waits
    assert sent == [job.pk]


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        # files.zip, files/delete/ (GET), send/ (POST), the project's files.zip,
        # files/delete/, send/ and delivery/ (nothing retrieved: the zips redirect
        # with a message, a send says there is nothing to send).
        ("alice", [302, 200, 302, 302, 200, 302, 200]),
        ("mia", [302, 403, 302, 302, 403, 302, 403]),
        ("bob", [302, 403, 403, 302, 403, 403, 403]),
        ("charlie", [404, 404, 404, 404, 404, 404, 404]),
    ],
)
def test_every_delivery_endpoint_for_owner_member_viewer_and_outsider(
    client, alice, bob, charlie, member, project, who, expected
):
    node = make_node("MATRIX", 104, "MATRIX")
    node.granted_users.add(alice)
    job = retrieval_job(alice, project, node, ["1.2.3"])
    user = {"alice": alice, "mia": member, "bob": bob, "charlie": charlie}[who]
    client.force_login(user)
    slug = project.slug
    got = [
        client.get(f"/jobs/{job.code}/files.zip").status_code,
        client.get(f"/jobs/{job.code}/files/delete/").status_code,
        client.post(f"/jobs/{job.code}/send/", {"destination": str(node.code)}).status_code,
        client.get(f"/projects/{slug}/files.zip").status_code,
        client.get(f"/projects/{slug}/files/delete/").status_code,
        client.post(f"/projects/{slug}/send/", {"destination": str(node.code)}).status_code,
        client.get(f"/projects/{slug}/delivery/").status_code,
    ]
    assert got == expected
    assert not AuditEvent.objects.filter(
        action__in=[AuditAction.DOWNLOAD, AuditAction.FILES_DELETED, AuditAction.SEND]
    ).exists()


def test_an_owner_turns_nifti_on_and_the_change_is_audited(client, alice, project):
    client.force_login(alice)
    response = client.post(
        f"/projects/{project.slug}/delivery/", {"nifti": "on", "viewers_may_download": "on"}
    )
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.nifti and project.viewers_may_download
    event = AuditEvent.objects.get(action=AuditAction.PROJECT_CHANGED, target__contains="nifti")
    assert event.actor == alice and event.details["changed"]["nifti"] == [False, True]
    assert (
        "each retrieved series converted by dcm2niix"
        in client.get(f"/projects/{project.slug}/").content.decode()
    )


def test_a_send_that_names_no_destination_says_so(client, alice, project):
    client.force_login(alice)
    for value in ("", "not-a-code", "00000000-0000-0000-0000-000000000000"):
        response = client.post(
            f"/projects/{project.slug}/send/", {"destination": value}, follow=True
        )
        assert "Choose a destination you may send to" in response.content.decode(), value


def test_downloads_deletions_and_conversions_log_no_patient_data(
    client, caplog, storage, alice, project, orthanc_node, dicom_data
):
    import logging

    caplog.set_level(logging.DEBUG)
    project.nifti = True
    project.save()
    job = _retrieved(alice, project, orthanc_node, _studies(dicom_data, 2))
    nifti.convert_job(job)
    client.force_login(alice)
    b"".join(client.get(f"/jobs/{job.code}/files.zip").streaming_content)
    client.get(f"/jobs/{job.code}/files.zip?row=x")
    client.post(f"/jobs/{job.code}/files/delete/")
    assert AuditEvent.objects.filter(action=AuditAction.FILES_DELETED).exists()
    for inst in dicom_data.instances:
        assert inst.patient_id not in caplog.text
        assert inst.patient_name not in caplog.text
