"""Find jobs in the browser's requests: upload, preview, start, results, export, access."""

import csv
import io

from openpyxl import load_workbook

from pulls.models import AuditAction, AuditEvent, FindResult, ItemStatus, Job, JobStatus
from tests.conftest import wait_for


def _csv(rows: list[dict[str, str]]) -> io.BytesIO:
    keys = list(rows[0])
    text = (
        ",".join(keys) + "\n" + "".join(",".join(r.get(k, "") for k in keys) + "\n" for r in rows)
    )
    upload = io.BytesIO(text.encode())
    upload.name = "queries.csv"
    return upload


def _upload(client, project, node, rows, **extra):
    return client.post(
        "/jobs/new/",
        {
            "project": project.pk,
            "node": node.pk,
            "query_file": _csv(rows),
            "default_level": "STUDY",
            "title": "Lung cohort",
            "kind": "find",
            **extra,
        },
    )


def _patient_rows(dicom_data):
    return [
        {"PatientID": pid, "StudyInstanceUID": "", "StudyDescription": "", "ModalitiesInStudy": ""}
        for pid in sorted(dicom_data.patients)
    ]


def test_an_upload_is_checked_and_saved_as_a_draft_to_preview(
    client, alice, project, orthanc_node, dicom_data
):
    client.force_login(alice)
    response = _upload(client, project, orthanc_node, _patient_rows(dicom_data))
    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/jobs/{job.code}/"
    assert job.status == JobStatus.DRAFT
    assert job.items_total == len(dicom_data.patients)
    assert job.items.get(row=1).identifier["QueryRetrieveLevel"] == "STUDY"
    page = client.get(response["Location"]).content.decode()
    assert "Start the job" in page
    assert f"PatientID={sorted(dicom_data.patients)[0]}" in page


def test_a_bad_file_shows_every_problem_inline_and_saves_nothing(
    client, alice, project, orthanc_node
):
    client.force_login(alice)
    rows = [
        {"PatientID": "P1", "StudyDate": "2020-01-31"},
        {"PatientID": "P2", "StudyDate": "20200101"},
        {"PatientID": "P1", "StudyDate": "2020-01-31"},
    ]
    response = _upload(client, project, orthanc_node, rows)
    page = response.content.decode()
    assert response.status_code == 200
    assert "queries.csv: nothing was saved" in page
    assert "row 1, StudyDate: &#x27;2020-01-31&#x27; looks like an ISO date" in page
    assert "row 3, StudyDate: &#x27;2020-01-31&#x27; looks like an ISO date" in page
    assert Job.objects.count() == 0
    assert not AuditEvent.objects.filter(action=AuditAction.JOB_CREATED).exists()


def test_a_viewer_cannot_upload_start_or_cancel(
    client, alice, bob, project, orthanc_node, dicom_data
):
    client.force_login(bob)
    response = _upload(client, project, orthanc_node, _patient_rows(dicom_data))
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    client.force_login(alice)
    _upload(client, project, orthanc_node, _patient_rows(dicom_data))
    job = Job.objects.get()
    client.force_login(bob)
    assert client.get(f"/jobs/{job.code}/").status_code == 200  # viewers may look
    assert client.post(f"/jobs/{job.code}/start/").status_code == 403
    assert client.post(f"/jobs/{job.code}/cancel/").status_code == 403
    assert client.post(f"/jobs/{job.code}/retry/").status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.DRAFT


def test_it_checks_ownership_of_the_job_and_its_exports(
    client, alice, charlie, project, orthanc_node, dicom_data
):
    client.force_login(alice)
    _upload(client, project, orthanc_node, _patient_rows(dicom_data))
    job = Job.objects.get()
    client.force_login(charlie)
    for url in ("", "start/", "cancel/", "retry/", "matches.csv", "matches.xlsx"):
        method = client.post if url.endswith("/") and url else client.get
        assert method(f"/jobs/{job.code}/{url}").status_code == 404, url
    assert not AuditEvent.objects.filter(action=AuditAction.EXPORT).exists()


def test_a_node_not_granted_cannot_be_chosen(client, alice, project, dcmqrscp, dicom_data):
    from tests.conftest import make_node

    hidden = make_node("HIDDEN", dcmqrscp.port, "DCMQRSCP")
    client.force_login(alice)
    response = _upload(client, project, hidden, _patient_rows(dicom_data))
    assert "Select a valid choice" in response.content.decode()
    assert Job.objects.count() == 0


def test_a_started_job_runs_on_a_worker_and_exports_every_row(
    celery_worker, client, alice, project, orthanc_node, dicom_data
):
    client.force_login(alice)
    rows = _patient_rows(dicom_data) + [{"PatientID": "NOBODY", "StudyInstanceUID": ""}]
    _upload(client, project, orthanc_node, rows)
    job = Job.objects.get()
    assert client.post(f"/jobs/{job.code}/start/").status_code == 302
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status == JobStatus.DONE,
        timeout=60,
        what=f"the job; worker log:\n{celery_worker.log_tail()}",
    )
    job.refresh_from_db()
    assert job.matches == len(dicom_data.studies)
    found = set(FindResult.objects.filter(job=job).values_list("study_instance_uid", flat=True))
    assert found == set(dicom_data.studies)
    page = client.get(f"/jobs/{job.code}/?modality=CT").content.decode()
    assert "Export CSV" in page

    response = client.get(f"/jobs/{job.code}/matches.csv")
    lines = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    header, body = lines[0], lines[1:]
    assert header[:7] == [
        "row",
        "row_status",
        "row_matches",
        "possibly_truncated",
        "row_error",
        "PatientID",
        "PatientName",
    ]
    assert all(len(line) == len(header) for line in body)
    assert len(body) == len(dicom_data.studies) + 1  # every match, and the row without one
    nobody = [line for line in body if line[0] == str(len(rows))]
    assert nobody == [[str(len(rows)), "done", "0", "", ""] + [""] * (len(header) - 5)]
    uid_column = header.index("StudyInstanceUID")
    assert {line[uid_column] for line in body} - {""} == set(dicom_data.studies)

    xlsx = client.get(f"/jobs/{job.code}/matches.xlsx")
    sheet = load_workbook(io.BytesIO(xlsx.content), read_only=True).worksheets[0]
    xlsx_rows = list(sheet.iter_rows(values_only=True))
    assert list(xlsx_rows[0]) == header
    assert len(xlsx_rows) == len(lines)
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT, job=job).count() == 2


def test_failed_rows_can_be_retried(
    celery_worker, client, alice, project, orthanc_node, dicom_data
):
    client.force_login(alice)
    _upload(client, project, orthanc_node, _patient_rows(dicom_data)[:2])
    job = Job.objects.get()
    client.post(f"/jobs/{job.code}/start/")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.DONE, timeout=60, what="job")
    # What a PACS outage leaves behind: a row that used up its attempts.
    job.items.filter(row=2).update(status=ItemStatus.FAILED, attempts=3, error_message="PACS down")
    from pulls.jobs.items import job_refresh_counters

    job_refresh_counters(job.pk)
    response = client.post(f"/jobs/{job.code}/retry/", follow=True)
    assert "1 failed rows queued again." in response.content.decode()
    wait_for(lambda: job.items.get(row=2).status == ItemStatus.DONE, timeout=60, what="retry")
    item = job.items.get(row=2)
    assert (item.attempts, item.error_message) == (1, "")
    assert AuditEvent.objects.filter(action=AuditAction.JOB_RETRIED, job=job).exists()


def test_cancel_stops_a_draft_and_its_rows(client, alice, project, orthanc_node, dicom_data):
    client.force_login(alice)
    _upload(client, project, orthanc_node, _patient_rows(dicom_data))
    job = Job.objects.get()
    client.post(f"/jobs/{job.code}/cancel/")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert set(job.items.values_list("status", flat=True)) == {ItemStatus.CANCELLED}
    response = client.post(f"/jobs/{job.code}/start/", follow=True)
    assert "has already been started" in response.content.decode()
    assert AuditEvent.objects.filter(action=AuditAction.JOB_CANCELLED, job=job).exists()


def test_export_cells_never_become_formulas():
    from pulls.jobs.exports import spreadsheet_safe as _cell

    assert _cell('=HYPERLINK("x")') == '\'=HYPERLINK("x")'
    assert _cell("-12.5") == "-12.5"
    assert _cell("@SUM(A1)") == "'@SUM(A1)"


def test_a_retrieval_can_be_uploaded_when_its_rows_name_uids(
    client, alice, project, orthanc_node, dicom_data
):
    client.force_login(alice)
    study = sorted(dicom_data.studies)[0]
    upload = io.BytesIO(f"QueryRetrieveLevel,StudyInstanceUID\nSTUDY,{study}\n".encode())
    upload.name = "move.csv"
    response = client.post(
        "/jobs/new/",
        {"kind": "get", "project": project.pk, "node": orthanc_node.pk, "query_file": upload},
    )
    assert response.status_code == 302
    job = Job.objects.get()
    assert (job.kind, job.status, job.items_total) == ("get", JobStatus.DRAFT, 1)


def test_a_retrieval_row_without_uid_is_refused_with_the_way_forward(
    client, alice, project, orthanc_node
):
    client.force_login(alice)
    response = _upload(client, project, orthanc_node, [{"PatientID": "P1"}], kind="move")
    page = response.content.decode()
    assert "row 1, StudyInstanceUID: a retrieval row needs one exact StudyInstanceUID" in page
    assert "run a find job first" in page
    assert Job.objects.count() == 0


def test_a_patient_root_retrieval_row_without_patient_id_is_refused(
    client, alice, project, orthanc_node
):
    """In the patient root model a retrieval names the patient too (PS3.4
    C.4.2.2.1); the same rows pass on a study root node."""
    client.force_login(alice)
    rows = [
        {"PatientID": "", "StudyInstanceUID": "1.2.3"},
        {"PatientID": "P2", "StudyInstanceUID": "1.2.4"},
        {"PatientID": "P*", "StudyInstanceUID": "1.2.5"},
    ]
    orthanc_node.query_model = "P"
    orthanc_node.save()
    page = _upload(client, project, orthanc_node, rows, kind="get").content.decode()
    assert "row 1, PatientID: the node uses the patient root model" in page
    assert "row 3, PatientID: the node uses the patient root model" in page
    assert "row 2" not in page
    assert Job.objects.count() == 0
    orthanc_node.query_model = "S"
    orthanc_node.save()
    assert _upload(client, project, orthanc_node, rows, kind="get").status_code == 302
    assert Job.objects.get().items_total == 3
