"""Pseudonymised projects in the portal: made and set by their owners, the
mapping for owners alone (audited), viewers who see pseudonyms only, and
pseudonyms a query file gives."""

from __future__ import annotations

import csv
import html
import io
from datetime import date

import pytest
from django.core.exceptions import ValidationError
from openpyxl import load_workbook

from accounts.models import User
from pulls.deid.keys import Keys
from pulls.models import (
    AuditAction,
    AuditEvent,
    Deidentification,
    FindResult,
    Job,
    JobStatus,
    Membership,
    Project,
    PseudonymPatient,
    PseudonymStudy,
    RetrievedInstance,
    Role,
)
from pulls.services import job_create
from tests.conftest import make_node, retrieval_job

ORIGINAL_ID, ORIGINAL_NAME = "PAT-7731", "Dupont^Jeanne"


@pytest.fixture
def pia(db) -> User:
    """Owns the pseudonymised project; no grant to pull identifiable data."""
    return User.objects.create_user("pia", password="pia-password-1")


@pytest.fixture
def mo(db) -> User:
    return User.objects.create_user("mo", password="mo-password-1")


@pytest.fixture
def pseudo(pia, mo, bob) -> Project:
    project = Project.objects.create(name="Cohort", slug="cohort")
    Membership.objects.create(project=project, user=pia, role=Role.OWNER)
    Membership.objects.create(project=project, user=mo, role=Role.MEMBER)
    Membership.objects.create(project=project, user=bob, role=Role.VIEWER)
    return project


@pytest.fixture
def node(pia, mo):
    node = make_node("NOWHERE", 9, "NOWHERE")
    node.granted_users.add(pia, mo)
    return node


def _mapped(project: Project) -> None:
    PseudonymPatient.objects.create(
        project=project, patient_id=ORIGINAL_ID, pseudonym="PXYZ", date_shift_days=14
    )
    PseudonymStudy.objects.create(
        project=project, patient_id=ORIGINAL_ID, study_instance_uid="1.2.3",
        pseudonym_study_uid="2.25.99", accession_number="ACC-1", pseudonym_accession="AQ",
    )  # fmt: skip


# -- making a project ----------------------------------------------------------


def test_a_new_project_is_pseudonymised_by_default_and_owned_by_who_made_it(client, pia):
    client.force_login(pia)
    assert "Pseudonymised" in client.get("/projects/new/").content.decode()
    response = client.post(
        "/projects/new/",
        {"name": "Heart", "slug": "heart", "deidentification": "pseudonymised",
         "retain_dates": "on", "clean_descriptors": "on"},
    )  # fmt: skip
    assert response.status_code == 302
    project = Project.objects.get(slug="heart")
    assert project.is_pseudonymised and len(project.pseudonym_secret) == 64
    assert Membership.objects.get(project=project).user == pia
    event = AuditEvent.objects.get(action=AuditAction.PROJECT_CHANGED, project=project)
    assert event.actor == pia and event.details["created"]["deidentification"] == "pseudonymised"
    page = client.get("/projects/heart/").content.decode()
    assert "Pseudonymised" in page and "Pseudonyms (owners only)" in page


def test_an_identifiable_project_needs_the_operators_grant(client, pia, alice):
    client.force_login(pia)
    data = {"name": "Raw", "slug": "raw", "deidentification": "identifiable"}
    response = client.post("/projects/new/", data)
    assert response.status_code == 200
    assert "You may not pull identifiable data" in response.content.decode()
    assert not Project.objects.filter(slug="raw").exists()
    client.force_login(alice)  # holds the grant
    assert client.post("/projects/new/", data).status_code == 302
    assert Project.objects.get(slug="raw").deidentification == Deidentification.IDENTIFIABLE


def test_the_grant_is_audited(operator, pia):
    pia.may_pull_identifiable = True
    pia.save()
    event = AuditEvent.objects.get(action=AuditAction.PERMISSION_CHANGED, target__startswith="pia")
    assert event.target == "pia may pull identifiable data"


def test_the_de_identification_changes_until_files_exist(client, pia, mo, pseudo):
    client.force_login(mo)
    assert client.get("/projects/cohort/deidentification/").status_code == 403  # a member
    client.force_login(pia)
    data = {"deidentification": "pseudonymised", "retain_dates": "", "clean_descriptors": "on"}
    assert client.post("/projects/cohort/deidentification/", data).status_code == 302
    pseudo.refresh_from_db()
    assert pseudo.retain_dates is False
    RetrievedInstance.objects.create(
        project=pseudo, path="a/b/c.dcm", study_instance_uid="2.25.1",
        series_instance_uid="2.25.2", sop_instance_uid="2.25.3",
    )  # fmt: skip
    data["retain_dates"] = "on"
    response = client.post("/projects/cohort/deidentification/", data)
    assert response.status_code == 200
    assert "holds files already" in response.content.decode()
    pseudo.refresh_from_db()
    assert pseudo.retain_dates is False


def test_an_identifiable_project_takes_no_files_while_no_owner_holds_the_grant(pia, node):
    project = Project.objects.create(
        name="Old", slug="old", deidentification=Deidentification.IDENTIFIABLE
    )
    Membership.objects.create(project=project, user=pia, role=Role.OWNER)
    with pytest.raises(ValidationError, match="none of its owners may pull identifiable data"):
        retrieval_job(pia, project, node, ["1.2.3"])
    pia.may_pull_identifiable = True
    pia.save()
    assert retrieval_job(pia, project, node, ["1.2.3"]).items_total == 1


# -- the mapping ---------------------------------------------------------------


def test_the_mapping_is_for_owners_alone_and_every_look_is_audited(
    client, pia, mo, bob, charlie, operator, pseudo
):
    _mapped(pseudo)
    client.force_login(pia)
    page = client.get("/projects/cohort/pseudonyms/")
    assert page.status_code == 200 and ORIGINAL_ID in page.content.decode()
    download = client.get("/projects/cohort/pseudonyms.csv")
    rows = list(csv.reader(io.StringIO(b"".join(download.streaming_content).decode())))
    assert rows[1][:2] == [ORIGINAL_ID, "PXYZ"] and rows[1][4:6] == ["1.2.3", "2.25.99"]
    assert (
        download["Cache-Control"].startswith("max-age=0") or "no-store" in download["Cache-Control"]
    )
    seen = AuditEvent.objects.filter(action=AuditAction.MAPPING, actor=pia, success=True)
    assert seen.count() == 2
    for user in (mo, bob, operator):  # a member, a viewer, an operator who is no owner
        client.force_login(user)
        assert client.get("/projects/cohort/pseudonyms/").status_code == 403
        assert client.get("/projects/cohort/pseudonyms.csv").status_code == 403
    refused = AuditEvent.objects.filter(action=AuditAction.MAPPING, success=False)
    assert refused.count() == 6
    client.force_login(charlie)  # not in the project: no such page
    assert client.get("/projects/cohort/pseudonyms.csv").status_code == 404


# -- what viewers see ----------------------------------------------------------


def _find_with_a_match(pia, project, node) -> Job:
    job = job_create(
        kind="find", owner=pia, project=project, node=node,
        rows=[{"QueryRetrieveLevel": "STUDY", "PatientID": ORIGINAL_ID}],
    )  # fmt: skip
    Job.objects.filter(pk=job.pk).update(status=JobStatus.DONE, matches=1)
    job.refresh_from_db()
    FindResult.objects.create(
        job=job, item=job.items.get(), patient_id=ORIGINAL_ID, study_instance_uid="1.2.3",
        accession_number="ACC-1", study_date=date(2021, 3, 4), modality="CT",
        study_description="CT Dupont chest",
        attributes={"PatientID": ORIGINAL_ID, "PatientName": ORIGINAL_NAME,
                    "PatientBirthDate": "19500101", "StudyDate": "20210304",
                    "AccessionNumber": "ACC-1", "StudyInstanceUID": "1.2.3",
                    "StudyDescription": "CT Dupont chest", "ModalitiesInStudy": "CT"},
    )  # fmt: skip
    return job


def test_a_viewer_sees_pseudonyms_where_members_see_what_the_pacs_answered(
    client, pia, bob, pseudo, node
):
    job = _find_with_a_match(pia, pseudo, node)
    keys = Keys(bytes.fromhex(pseudo.pseudonym_secret))
    client.force_login(pia)
    assert ORIGINAL_ID in client.get(f"/jobs/{job.code}/").content.decode()

    client.force_login(bob)
    page = client.get(f"/jobs/{job.code}/").content.decode()
    exported = b"".join(client.get(f"/jobs/{job.code}/matches.csv").streaming_content).decode()
    sheet = load_workbook(io.BytesIO(client.get(f"/jobs/{job.code}/matches.xlsx").content))
    cells = " ".join(str(c.value) for row in sheet.active.iter_rows() for c in row)
    for text in (page, exported, cells):
        for original in (ORIGINAL_ID, "Dupont", "19500101", "ACC-1", "1.2.3", "2021-03-04",
                         "20210304"):  # fmt: skip
            assert original not in text, original
        assert keys.patient_id(ORIGINAL_ID) in text
    assert keys.uid("1.2.3") in exported and "CT chest" in exported


# -- pseudonyms a query file gives ---------------------------------------------


def _rows(*pairs):
    return [{"QueryRetrieveLevel": "STUDY", "PatientID": p, "Pseudonym": s} for p, s in pairs]


def test_a_query_files_pseudonyms_are_kept_for_later_jobs(pia, pseudo, node):
    job_create(kind="find", owner=pia, project=pseudo, node=node,
               rows=_rows(("PAT-1", "LUNG-001"), ("PAT-2", "LUNG-002")))  # fmt: skip
    given = dict(
        PseudonymPatient.objects.filter(project=pseudo, given=True).values_list(
            "patient_id", "pseudonym"
        )
    )
    assert given == {"PAT-1": "LUNG-001", "PAT-2": "LUNG-002"}
    # The same again is no conflict; a different one is, named by row.
    job_create(kind="find", owner=pia, project=pseudo, node=node, rows=_rows(("PAT-1", "LUNG-001")))
    with pytest.raises(ValidationError) as info:
        job_create(kind="find", owner=pia, project=pseudo, node=node,
                   rows=_rows(("PAT-1", "LUNG-009"), ("PAT-3", "LUNG-002")))  # fmt: skip
    messages = info.value.messages
    assert "row 1, Pseudonym: PatientID PAT-1 is LUNG-001 in this project already" in messages[0]
    assert "row 2, Pseudonym: LUNG-002 stands for another patient" in messages[1]
    assert Job.objects.filter(project=pseudo).count() == 2  # nothing saved of the third


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"StudyInstanceUID": "1.2.3", "Pseudonym": "X1"}, "needs the row's exact PatientID"),
        ({"PatientID": "PAT*", "Pseudonym": "X1"}, "needs the row's exact PatientID"),
        ({"PatientID": "P1", "Pseudonym": "PABCDEFGHIJKLMNOP"}, "looks like a pseudonym"),
        ({"PatientID": "P1", "Pseudonym": "../x"}, "letters, digits"),
    ],
)
def test_a_pseudonym_that_cannot_be_is_named_with_its_row(client, pia, pseudo, node, row, expected):
    """Through the New job page, as a person uploads it."""
    client.force_login(pia)
    header = ["QueryRetrieveLevel", *row]
    text = ",".join(header) + "\n" + ",".join(["STUDY", *row.values()]) + "\n"
    response = client.post(
        "/jobs/new/",
        {"kind": "find", "project": pseudo.pk, "node": node.pk,
         "query_file": _upload("q.csv", text)},
    )  # fmt: skip
    assert response.status_code == 200
    assert expected in html.unescape(response.content.decode())
    assert not Job.objects.filter(project=pseudo).exists()


def test_an_identifiable_project_takes_no_pseudonyms(alice, project, node):
    node.granted_users.add(alice)
    with pytest.raises(ValidationError, match="takes no pseudonyms"):
        job_create(kind="find", owner=alice, project=project, node=node,
                   rows=_rows(("PAT-1", "LUNG-001")))  # fmt: skip


def _upload(name: str, text: str):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")
