"""Ways in besides a file written by hand: a pasted column of values, example
files to start from, and the failed rows of a job back as a file to correct."""

import csv
import io
import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from openpyxl import load_workbook

from pulls.models import ItemStatus, Job, JobStatus
from pulls.queries.files import parse_query_file
from tests.conftest import find_job


def _new(client, project, node, **fields):
    data = {"kind": "find", "project": project.pk, "node": node.pk, "default_level": "STUDY"}
    data.update(fields)
    return client.post("/jobs/new/", data)


def test_a_pasted_list_becomes_a_job_with_its_date_range_and_modality(
    client, alice, project, orthanc_node
):
    client.force_login(alice)
    response = _new(
        client, project, orthanc_node,
        pasted="A0001\n\nA0002\nA0001\n  A0003  \n", pasted_key="AccessionNumber",
        date_from="2020-01-01", date_to="2021-12-31", modality="ct",
    )  # fmt: skip
    assert response.status_code == 302
    job = Job.objects.get()
    assert job.source_name == "pasted list"
    rows = list(job.items.order_by("row").values_list("row", "identifier"))
    assert [row for row, _ in rows] == [1, 3, 5]  # line numbers; line 4 repeats line 1
    assert rows[0][1] == {
        "QueryRetrieveLevel": "STUDY",
        "AccessionNumber": "A0001",
        "StudyDate": "20200101-20211231",
        "ModalitiesInStudy": "CT",
    }
    page = client.get(response["Location"]).content.decode()
    assert "1 repeated row(s) merged into the first: row 4 (as row 1)" in page


def test_a_pasted_list_is_checked_as_a_file_is(client, alice, project, orthanc_node):
    client.force_login(alice)
    response = _new(
        client, project, orthanc_node, pasted="1.2.3\nx.y\n", pasted_key="StudyInstanceUID"
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "pasted list: nothing was saved" in page
    assert "row 2, StudyInstanceUID: &#x27;x.y&#x27; is not a UID" in page
    assert not Job.objects.exists()


def test_a_file_and_a_pasted_list_together_or_neither_are_refused(
    client, alice, project, orthanc_node
):
    client.force_login(alice)
    upload = SimpleUploadedFile("q.csv", b"QueryRetrieveLevel,PatientID\nSTUDY,1\n")
    both = _new(client, project, orthanc_node, pasted="A1", query_file=upload)
    assert "Upload a query file or paste a list, not both." in both.content.decode()
    neither = _new(client, project, orthanc_node)
    assert "Upload a query file, or paste a list of values." in neither.content.decode()
    assert not Job.objects.exists()


@pytest.mark.parametrize("fmt", ["csv", "json", "xlsx"])
def test_the_example_files_are_valid_query_files(client, alice, fmt):
    client.force_login(alice)
    response = client.get(f"/jobs/example.{fmt}")
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    parsed = parse_query_file(response.content, name=f"example.{fmt}")
    assert parsed.ok, parsed.problems
    assert len(parsed.rows) == 3


def _finished_find(alice, project, node, source_name):
    rows = [
        {"QueryRetrieveLevel": "STUDY", "PatientID": "P1"},
        {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "NOPE"},
        {"QueryRetrieveLevel": "STUDY", "PatientID": "P3", "StudyDate": "20200101-20201231"},
    ]
    job = find_job(alice, project, node, rows, source_name=source_name)
    items = list(job.items.order_by("row"))
    items[0].status, items[0].matches = ItemStatus.DONE, 2
    items[1].status, items[1].matches = ItemStatus.DONE, 0
    items[2].status, items[2].error_message = ItemStatus.FAILED, "could not connect to 10.0.0.1"
    for item in items:
        item.save()
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
    return job


def test_failed_rows_go_back_as_the_uploaded_format_and_come_again_as_a_job_that_follows(
    client, alice, project, orthanc_node
):
    job = _finished_find(alice, project, orthanc_node, "my list.csv")
    client.force_login(alice)
    page = client.get(f"/jobs/{job.code}/").content.decode()
    assert "2 rows failed or matched nothing" in page
    assert f"follows={job.code}" in page
    response = client.get(f"/jobs/{job.code}/failed.csv")
    assert response.status_code == 200
    lines = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(line["#row"], line["#reason"]) for line in lines] == [
        ("2", "matched nothing"),
        ("3", "could not connect to 10.0.0.1"),
    ]
    assert lines[1]["StudyDate"] == "20200101-20201231"
    # Corrected (the notes may stay) and uploaded again, as a job that follows.
    upload = SimpleUploadedFile("my list.csv", response.content)
    again = client.post(
        "/jobs/new/",
        {
            "kind": "find", "project": project.pk, "node": orthanc_node.pk,
            "default_level": "", "query_file": upload, "follows": str(job.code),
        },
    )  # fmt: skip
    assert again.status_code == 302
    follower = Job.objects.exclude(pk=job.pk).get()
    assert follower.follows == job
    assert follower.items_total == 2
    identifiers = follower.items.order_by("row").values_list("identifier", flat=True)
    # A CSV's empty cells are return keys; the values are the failed rows'.
    assert [{k: v for k, v in keys.items() if v} for keys in identifiers] == [
        {"QueryRetrieveLevel": "STUDY", "AccessionNumber": "NOPE"},
        {"QueryRetrieveLevel": "STUDY", "PatientID": "P3", "StudyDate": "20200101-20201231"},
    ]
    assert "corrects the rows of" in client.get(again["Location"]).content.decode()


@pytest.mark.parametrize("fmt", ["json", "xlsx"])
def test_failed_rows_of_a_json_or_xlsx_job_come_back_as_json_or_xlsx(
    client, alice, project, orthanc_node, fmt
):
    job = _finished_find(alice, project, orthanc_node, f"list.{fmt}")
    client.force_login(alice)
    assert f"failed.{fmt}" in client.get(f"/jobs/{job.code}/").content.decode()
    data = client.get(f"/jobs/{job.code}/failed.{fmt}").content
    if fmt == "json":
        assert json.loads(data)[1]["#reason"] == "could not connect to 10.0.0.1"
    else:
        sheet = load_workbook(io.BytesIO(data)).active
        assert sheet["A1"].value == "QueryRetrieveLevel"
    parsed = parse_query_file(data, name=f"list.{fmt}")
    assert parsed.ok and len(parsed.rows) == 2


def test_failed_rows_are_access_checked(client, bob, charlie, alice, project, orthanc_node):
    job = _finished_find(alice, project, orthanc_node, "q.csv")
    client.force_login(charlie)
    assert client.get(f"/jobs/{job.code}/failed.csv").status_code == 404
    client.force_login(bob)  # a viewer reads
    assert client.get(f"/jobs/{job.code}/failed.csv").status_code == 200
    assert "Upload the corrected file" not in client.get(f"/jobs/{job.code}/").content.decode()
