"""The REST API (pulls.api): personal tokens, the contract scripts rely on,
every endpoint for owner, member, viewer, outsider and anonymous, read-only
tokens, the rate limit, the schema, and a whole session against a real worker
and Orthanc."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta

import pytest
import yaml
from django.core.management import call_command
from django.utils import timezone
from drf_spectacular.validation import validate_schema

from accounts.models import ApiToken
from pulls.api.tokens import token_create
from pulls.models import AuditAction, AuditEvent, Job, Membership, Role
from tests.conftest import find_job, make_node, wait_for

pytestmark = pytest.mark.services


def _bearer(text: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {text}"}


@pytest.fixture
def member(db, project):
    from accounts.models import User

    user = User.objects.create_user("mia", password="mia-password-1")
    Membership.objects.create(project=project, user=user, role=Role.MEMBER)
    return user


@pytest.fixture
def node(alice, bob, member):
    node = make_node("APINODE", 104, "APINODE")
    node.granted_users.add(alice, bob, member)
    return node


def _token(user, *, read_only=False) -> str:
    return token_create(user=user, name="test", read_only=read_only)[1]


def test_a_token_is_made_on_the_account_page_shown_once_kept_hashed_and_revoked(client, alice):
    client.force_login(alice)
    page = client.post("/accounts/tokens/", {"name": "notebook", "scope": "write", "days": "30"})
    assert page.status_code == 200
    text = page.context["new_token"]
    assert text.startswith("pnp_") and text in page.content.decode()
    token = ApiToken.objects.get(user=alice)
    assert token.digest != text and text not in (token.digest, token.prefix)
    assert token.scope == ApiToken.WRITE
    assert 29 <= (token.expires_at - timezone.now()).days <= 30
    # Shown once: the account page afterwards lists its prefix, never the token.
    listed = client.get("/accounts/").content.decode()
    assert token.prefix in listed and text not in listed

    client.logout()
    assert client.get("/api/v1/nodes/", **_bearer(text)).status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None

    client.force_login(alice)
    client.post(f"/accounts/tokens/{token.pk}/revoke/")
    client.logout()
    refused = client.get("/api/v1/nodes/", **_bearer(text))
    assert refused.status_code == 401
    assert "unknown, expired or revoked" in refused.json()["detail"]
    assert refused["WWW-Authenticate"].startswith("Bearer")
    events = AuditEvent.objects.filter(action=AuditAction.TOKEN, actor=alice)
    assert [e.target.split()[-1] for e in events.order_by("at")] == ["made", "revoked"]


def test_bad_token_forms_and_expired_tokens_are_401(client, alice):
    token, text = token_create(user=alice, name="old")
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    for header in (f"Bearer {text}", "Bearer", "Bearer a b", "Bearer pnp_nothing", "Bearer x" * 50):
        assert client.get("/api/v1/nodes/", HTTP_AUTHORIZATION=header).status_code == 401, header
    assert (
        client.post("/accounts/tokens/", {"name": "x", "scope": "write", "days": "0"}).status_code
        == 302
    )
    client.force_login(alice)
    bad = client.post("/accounts/tokens/", {"name": "x", "scope": "write", "days": "0"})
    assert bad.status_code == 400 and ApiToken.objects.count() == 1


def test_the_command_line_makes_a_token_that_works(client, alice, capsys):
    call_command("api_token", "alice", "--read-only", "--days", "7")
    text = capsys.readouterr().out.strip()
    assert client.get("/api/v1/projects/", **_bearer(text)).status_code == 200
    assert ApiToken.objects.get().scope == ApiToken.READ
    assert AuditEvent.objects.get(action=AuditAction.TOKEN).actor_label == "command line"


def test_the_contract_scripts_rely_on(client, alice, project, node):
    text = _token(alice)
    nodes = client.get("/api/v1/nodes/", **_bearer(text)).json()
    projects = client.get("/api/v1/projects/", **_bearer(text)).json()
    assert [n["code"] for n in nodes] == [str(node.code)]
    assert [p["code"] for p in projects] == [str(project.code)]
    body = {
        "kind": "find", "project": str(project.code), "node": str(node.code), "title": "api",
        "rows": [{"QueryRetrieveLevel": "STUDY", "PatientID": "P1", "StudyInstanceUID": ""}],
        "start": False,
    }  # fmt: skip
    made = client.post("/api/v1/jobs/", body, content_type="application/json", **_bearer(text))
    assert made.status_code == 201
    job = made.json()
    assert job["status"] == "draft" and job["rows"] == 1 and job["kind"] == "find"
    detail = client.get(f"/api/v1/jobs/{job['code']}/", **_bearer(text)).json()
    assert {k: detail[k] for k in ("status", "rows", "failed", "matches", "instances")} == {
        "status": "draft", "rows": 1, "failed": 0, "matches": 0, "instances": 0,
    }  # fmt: skip
    assert AuditEvent.objects.get(action=AuditAction.JOB_CREATED).actor == alice


def test_bad_rows_answer_400_with_row_key_and_fix_and_save_nothing(client, alice, project, node):
    text = _token(alice)
    body = {
        "kind": "move", "project": str(project.code), "node": str(node.code),
        "rows": [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3"},
                 {"QueryRetrieveLevel": "STUDY", "StudyDate": "2024-13-01"},
                 {"QueryRetrieveLevel": "STUDY", "Nonsense": "x"}],
    }  # fmt: skip
    answer = client.post("/api/v1/jobs/", body, content_type="application/json", **_bearer(text))
    assert answer.status_code == 400
    problems = answer.json()["problems"]
    assert {(p["row"], p["key"]) for p in problems} >= {(2, "StudyDate"), (3, "Nonsense")}
    assert all(p["message"] for p in problems)
    assert "nothing was saved" in answer.json()["detail"]
    assert not Job.objects.exists()
    # A retrieval row without its study: the same check as the page's.
    body["rows"] = [{"QueryRetrieveLevel": "STUDY", "PatientID": "P1"}]
    answer = client.post("/api/v1/jobs/", body, content_type="application/json", **_bearer(text))
    assert answer.json()["problems"][0]["key"] == "StudyInstanceUID"
    # Neither rows nor a file; a project that is not mine.
    del body["rows"]
    assert client.post("/api/v1/jobs/", body, content_type="application/json",
                       **_bearer(text)).status_code == 400  # fmt: skip
    assert not Job.objects.exists()


def test_a_query_file_uploads_as_multipart(client, alice, project, node):
    text = _token(alice)
    upload = io.BytesIO(b"QueryRetrieveLevel,PatientID\nSTUDY,P1\nSTUDY,P2\n")
    upload.name = "cohort.csv"
    answer = client.post(
        "/api/v1/jobs/",
        {"kind": "find", "project": str(project.code), "node": str(node.code), "file": upload},
        **_bearer(text),
    )
    assert answer.status_code == 201, answer.json()
    assert answer.json()["rows"] == 2
    assert Job.objects.get().source_name == "cohort.csv"


def test_a_read_only_token_reads_and_changes_nothing(client, alice, project, node):
    text = _token(alice, read_only=True)
    job = find_job(alice, project, node)
    assert client.get(f"/api/v1/jobs/{job.code}/", **_bearer(text)).status_code == 200
    refused = client.post(f"/api/v1/jobs/{job.code}/cancel/", **_bearer(text))
    assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
    job.refresh_from_db()
    assert job.status == "draft"


def test_a_token_past_its_rate_gets_429_with_retry_after(client, settings, alice):
    settings.PACSNPULL_API_RATE = 3
    text = _token(alice)
    codes = [client.get("/api/v1/nodes/", **_bearer(text)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/api/v1/nodes/", **_bearer(text))
    assert 1 <= int(limited["Retry-After"]) <= 60
    other = _token(alice)  # a token of its own: counted apart
    assert client.get("/api/v1/nodes/", **_bearer(other)).status_code == 200


def test_the_schema_is_served_and_valid(client, alice):
    answer = client.get("/api/v1/schema/", **_bearer(_token(alice)))
    assert answer.status_code == 200
    schema = yaml.safe_load(answer.content)
    validate_schema(schema)
    for path in ("/api/v1/nodes/", "/api/v1/projects/", "/api/v1/jobs/",
                 "/api/v1/jobs/{code}/", "/api/v1/jobs/{code}/{action}/"):  # fmt: skip
        assert path in schema["paths"], path
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


ENDPOINTS = [
    # (method, path, body); {job}: a find job of the project, {project}, {node}
    ("get", "/api/v1/jobs/{job}/", None),
    ("get", "/api/v1/jobs/{job}/rows/", None),
    ("get", "/api/v1/jobs/{job}/matches/", None),
    ("get", "/api/v1/jobs/{job}/matches.csv", None),
    ("get", "/api/v1/jobs/{job}/matches.xlsx", None),
    ("get", "/api/v1/jobs/{job}/manifest.csv", None),
    ("post", "/api/v1/jobs/{job}/cancel/", None),
    ("post", "/api/v1/jobs/{job}/retrieve/", {"method": "move"}),
    ("get", "/api/v1/projects/{project}/pseudonyms/", None),
    ("post", "/api/v1/nodes/{node}/echo/", None),
]
EXPECTED = {
    # owner: cancel works; retrieve: 400 (the find has no matches); mapping 404
    # (an identifiable project keeps none); echo 200 (granted).
    "alice": [200, 200, 200, 200, 200, 200, 200, 400, 404, 200],
    "mia": [200, 200, 200, 200, 200, 200, 200, 400, 404, 200],
    "bob": [200, 200, 200, 200, 200, 200, 403, 403, 404, 200],
    "charlie": [404, 404, 404, 404, 404, 404, 404, 404, 404, 404],
    "anonymous": [401] * 10,
}


@pytest.mark.parametrize("who", sorted(EXPECTED))
def test_every_endpoint_for_owner_member_viewer_outsider_and_anonymous(
    client, alice, bob, charlie, member, project, node, who
):
    node.suspended = True  # the echo answers without a PACS: "not sent: suspended"
    node.save()
    users = {"alice": alice, "mia": member, "bob": bob, "charlie": charlie}
    headers = _bearer(_token(users[who])) if who in users else {}
    got = []
    for method, path, body in ENDPOINTS:
        job = find_job(alice, project, node)
        url = path.format(job=job.code, project=project.code, node=node.code)
        kwargs = {"data": body, "content_type": "application/json"} if body else {}
        got.append(getattr(client, method)(url, **kwargs, **headers).status_code)
    assert got == EXPECTED[who]
    # Lists hold only what is theirs.
    if who in users:
        projects = client.get("/api/v1/projects/", **headers).json()
        jobs = client.get("/api/v1/jobs/", **headers).json()["results"]
        assert bool(projects) == (who != "charlie") and bool(jobs) == (who != "charlie")


def test_the_mapping_is_for_the_projects_owners(client, alice, bob, node):
    from pulls.models import Project

    pseudonymised = Project.objects.create(name="Pseudo", slug="pseudo")
    Membership.objects.create(project=pseudonymised, user=alice, role=Role.OWNER)
    Membership.objects.create(project=pseudonymised, user=bob, role=Role.VIEWER)
    url = f"/api/v1/projects/{pseudonymised.code}/pseudonyms/"
    assert client.get(url, **_bearer(_token(alice))).status_code == 200
    assert client.get(url, **_bearer(_token(bob))).status_code == 403
    assert AuditEvent.objects.filter(action=AuditAction.MAPPING, success=False, actor=bob).exists()


def test_a_whole_session_find_then_retrieve_then_download(
    client, celery_worker, tmp_path, alice, project, orthanc_node, dicom_data, settings, staging
):
    """As a notebook does it: submit a list, wait, read the matches, retrieve
    them by C-GET, wait, download the files."""
    from pulls.models import Project

    Project.objects.filter(pk=project.pk).update(storage_path=str(tmp_path / "files"))
    text = _token(alice)
    patient = sorted(dicom_data.patients)[0]
    body = {"kind": "find", "project": str(project.code), "node": str(orthanc_node.code),
            "rows": [{"QueryRetrieveLevel": "STUDY", "PatientID": patient,
                      "StudyInstanceUID": ""}], "start": True}  # fmt: skip
    job = client.post(
        "/api/v1/jobs/", body, content_type="application/json", **_bearer(text)
    ).json()
    assert job["status"] in ("queued", "running", "done")  # the worker may be quick

    def status(code):
        return client.get(f"/api/v1/jobs/{code}/", **_bearer(text)).json()["status"]

    wait_for(lambda: status(job["code"]) == "done", timeout=60,
             what=f"the find (worker log:\n{celery_worker.log_tail()})")  # fmt: skip
    matches = client.get(f"/api/v1/jobs/{job['code']}/matches/", **_bearer(text)).json()
    studies = {i.study_instance_uid for i in dicom_data.patients[patient]}
    assert {m["study_instance_uid"] for m in matches["results"]} == studies
    made = client.post(f"/api/v1/jobs/{job['code']}/retrieve/", {"method": "get"},
                       content_type="application/json", **_bearer(text)).json()  # fmt: skip
    started = client.post(f"/api/v1/jobs/{made['code']}/start/", **_bearer(text)).json()
    assert started["status"] in ("queued", "running", "done")
    wait_for(lambda: status(made["code"]) == "done", timeout=120,
             what=f"the retrieval (worker log:\n{celery_worker.log_tail()})")  # fmt: skip
    done = client.get(f"/api/v1/jobs/{made['code']}/", **_bearer(text)).json()
    assert done["instances"] == len(dicom_data.patients[patient])
    answer = client.get(f"/api/v1/jobs/{made['code']}/files.zip", **_bearer(text))
    archive = zipfile.ZipFile(io.BytesIO(b"".join(answer.streaming_content)))
    assert len([n for n in archive.namelist() if n.endswith(".dcm")]) == done["instances"]
    assert AuditEvent.objects.filter(action=AuditAction.DOWNLOAD, actor=alice).exists()


def test_the_browsable_pages_allow_inline_styles_and_never_inline_scripts(client, alice):
    client.force_login(alice)
    page = client.get("/api/v1/nodes/", HTTP_ACCEPT="text/html")
    policy = page["Content-Security-Policy"]
    assert "style-src 'self' 'unsafe-inline'" in policy
    assert (
        "script-src 'self';" in policy + ";" and "unsafe-inline" not in policy.split("style-src")[0]
    )
    plain = client.get("/api/v1/nodes/", HTTP_ACCEPT="application/json")
    assert "unsafe-inline" not in plain["Content-Security-Policy"]


def test_a_job_shows_its_progress_and_may_name_a_destination(client, alice, project, node):
    destination = make_node("DEST", 104, "DEST", is_destination=True)
    destination.granted_users.add(alice)
    text = _token(alice)
    body = {"kind": "get", "project": str(project.code), "node": str(node.code),
            "rows": [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3"}],
            "destination": str(destination.code)}  # fmt: skip
    job = client.post("/api/v1/jobs/", body, content_type="application/json", **_bearer(text))
    assert job.status_code == 201 and job.json()["destination"] == str(destination.code)
    detail = client.get(f"/api/v1/jobs/{job.json()['code']}/", **_bearer(text)).json()
    assert detail["progress"]["percent_done"] == 0 and detail["progress"]["state"]
    body["destination"] = str(node.code)  # not a destination
    refused = client.post("/api/v1/jobs/", body, content_type="application/json", **_bearer(text))
    assert refused.status_code == 400 and Job.objects.count() == 1


def test_the_schema_generates_without_a_warning(tmp_path):
    """drf-spectacular knows every call's answers: no guessed serializer, no
    unnamed enum, nothing it had to leave out."""
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yaml"))
    assert "/api/v1/jobs/{code}/files.zip" in (tmp_path / "s.yaml").read_text()


def test_a_job_that_cannot_start_is_answered_as_the_draft_it_is_and_why(
    client, settings, alice, project, node
):
    settings.PACSNPULL_MIN_FREE_BYTES = 1 << 60  # more than any disk has
    body = {"kind": "get", "project": str(project.code), "node": str(node.code), "start": True,
            "rows": [{"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2.3"}]}  # fmt: skip
    answer = client.post("/api/v1/jobs/", body, content_type="application/json",
                         **_bearer(_token(alice)))  # fmt: skip
    assert answer.status_code == 201
    assert answer.json()["status"] == "draft" and "free" in answer.json()["not_started"]
    assert Job.objects.get().status == "draft"
