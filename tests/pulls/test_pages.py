"""Pages: who may open what (owner, viewer, outsider, operator), and what they show."""

import csv
import io

import pytest

from pulls.models import AuditAction, AuditEvent, JobStatus
from tests.conftest import find_job, make_node


@pytest.fixture
def node(alice, bob):
    node = make_node("PAGES", 104, "PAGES")
    node.granted_users.add(alice, bob)
    return node


@pytest.fixture
def job(alice, project, node):
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": "P1"}]
    return find_job(alice, project, node, rows, title="Lung CTs")


def _status(client, user, url, method="get"):
    client.force_login(user)
    return getattr(client, method)(url).status_code


def test_every_page_needs_a_login(client, job, project):
    urls = ["/", "/live/", "/nodes/", "/projects/", f"/projects/{project.slug}/", "/audit/",
            "/audit/export.csv", "/accounts/", f"/jobs/{job.code}/progress/",
            f"/jobs/{job.code}/rows/"]  # fmt: skip
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/accounts/login/" in response["Location"], url


def test_project_pages_owner_viewer_outsider(client, alice, bob, charlie, project, job):
    url = f"/projects/{project.slug}/"
    assert _status(client, alice, url) == 200
    assert _status(client, bob, url) == 200
    assert _status(client, charlie, url) == 404
    client.force_login(charlie)
    assert project.name not in client.get("/projects/").content.decode()
    client.force_login(bob)
    page = client.get(url).content.decode()
    assert "Lung CTs" in page and "viewer" in page.lower()
    assert "/jobs/new/?project=" not in page  # viewers get no "New job" button here


def test_live_progress_owner_viewer_outsider(client, alice, bob, charlie, job):
    url = f"/jobs/{job.code}/progress/"
    assert _status(client, alice, url) == 200
    assert _status(client, bob, url) == 200
    assert _status(client, charlie, url) == 404
    client.force_login(alice)
    fragment = client.get(url).content.decode()
    assert "Not started: nothing has been sent to the PACS." in fragment
    assert "data-live-final" in fragment  # a draft does not poll


def test_only_operators_mark_jobs_urgent(client, alice, bob, charlie, operator, job):
    url = f"/jobs/{job.code}/urgent/"
    assert _status(client, charlie, url, "post") == 404
    assert _status(client, bob, url, "post") == 403
    assert _status(client, alice, url, "post") == 403
    assert _status(client, operator, url, "post") == 302
    job.refresh_from_db()
    assert job.urgent


def test_the_audit_log_operators_see_all_researchers_their_projects(
    client, alice, bob, charlie, operator, project, job
):
    AuditEvent.objects.create(action=AuditAction.ECHO, actor_label="someone", target="ELSEWHERE")
    client.force_login(operator)
    page = client.get("/audit/").content.decode()
    assert "ELSEWHERE" in page and str(job.code) in page
    client.force_login(bob)  # a viewer of the project sees its events
    page = client.get("/audit/").content.decode()
    assert str(job.code) in page and "ELSEWHERE" not in page
    client.force_login(charlie)
    page = client.get("/audit/").content.decode()
    assert str(job.code) not in page and "ELSEWHERE" not in page
    # An outsider cannot filter their way into a project: the choice is refused.
    page = client.get(f"/audit/?project={project.slug}").content.decode()
    assert "Select a valid choice" in page and str(job.code) not in page
    # Nor export it: an invalid filter shows its error instead of a wider export.
    response = client.get(f"/audit/export.csv?project={project.slug}")
    assert response.status_code == 302
    assert response["Location"] == f"/audit/?project={project.slug}"


def test_the_audit_export_is_filtered_complete_and_itself_audited(client, operator, project, job):
    client.force_login(operator)
    response = client.get(f"/audit/export.csv?action=job_created&project={project.slug}")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0][:4] == ["at", "actor", "ip", "action"]
    assert len(rows) == 2 and rows[1][3] == "job_created" and rows[1][6] == project.slug
    export = AuditEvent.objects.filter(action=AuditAction.EXPORT, target="audit.csv").get()
    assert export.actor == operator
    assert export.details["filters"] == {"action": "job_created", "project": "Lung study"}


def test_the_dashboard_shows_my_jobs_node_health_workers_and_storage(
    client, alice, project, node, job
):
    job.status = JobStatus.QUEUED
    job.save()
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert "Lung CTs" in page
    assert "PAGES" in page and "0 / 2" in page  # associations in use / allowed
    assert "No worker is alive" in page  # no worker runs in this test
    assert "Project storage" in page and "free of" in page
    live = client.get("/live/").content.decode()
    assert "Lung CTs" in live and 'value="/"' in live  # echo comes back to the dashboard


def test_the_account_page_lists_projects_and_nodes(client, alice, project, node):
    client.force_login(alice)
    page = client.get("/accounts/").content.decode()
    assert "Lung study" in page and "as owner" in page and "PAGES" in page


JOB_READS = ["", "progress/", "rows/", "matches.csv", "matches.xlsx", "manifest.csv"]
JOB_WRITES = ["start/", "cancel/", "pause/", "resume/", "retry/", "retrieve/"]


@pytest.mark.parametrize(
    ("who", "reads", "writes"),
    [("alice", 200, 302), ("bob", 200, 403), ("charlie", 404, 404)],
)
def test_every_job_endpoint_for_owner_viewer_and_outsider(
    client, alice, bob, charlie, job, who, reads, writes
):
    user = {"alice": alice, "bob": bob, "charlie": charlie}[who]
    client.force_login(user)
    for suffix in JOB_READS:
        response = client.get(f"/jobs/{job.code}/{suffix}")
        assert response.status_code == reads, (who, suffix)
    for suffix in JOB_WRITES:
        response = client.post(f"/jobs/{job.code}/{suffix}", {"method": "move", "level": "STUDY"})
        # The owner's "retrieve these" of a find with no matches: the page again,
        # saying so, with the form as it was sent.
        expected = 400 if (who, suffix) == ("alice", "retrieve/") else writes
        assert response.status_code == expected, (who, suffix)
    # Reads are audited only for those who may read.
    exports = AuditEvent.objects.filter(action=AuditAction.EXPORT, actor=user).count()
    assert exports == (3 if reads == 200 else 0)


def test_node_pages_for_granted_and_other_users(client, alice, charlie, node):
    client.force_login(charlie)
    assert client.get(f"/nodes/{node.code}/").status_code == 404
    assert client.post(f"/nodes/{node.code}/echo/").status_code == 404
    assert "PAGES" not in client.get("/nodes/").content.decode()
    client.force_login(alice)
    assert client.get(f"/nodes/{node.code}/").status_code == 200


def test_the_live_rows_fragment_keeps_the_filter_and_shows_statuses(client, alice, job):
    client.force_login(alice)
    fragment = client.get(f"/jobs/{job.code}/rows/").content.decode()
    assert "PatientID=P1" in fragment and "Pending" in fragment
    assert "data-live-final" in fragment  # a draft does not poll
    filtered = client.get(f"/jobs/{job.code}/rows/?status=done").content.decode()
    assert "No rows with this status." in filtered
    page = client.get(f"/jobs/{job.code}/?status=done").content.decode()
    assert f'data-live-url="/jobs/{job.code}/rows/?status=done"' in page


def _portal_urls(code: str | None = None):
    """Every URL the portal's own apps define, with placeholder arguments
    (``code``: what stands in for a job's or node's code)."""
    import re
    import uuid

    from django.urls import URLPattern, URLResolver, get_resolver

    def walk(patterns, prefix=""):
        for entry in patterns:
            if isinstance(entry, URLResolver):
                if "admin" in str(entry.pattern):
                    continue  # the admin checks staff itself
                yield from walk(entry.url_patterns, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern):
                yield entry.name, prefix + str(entry.pattern)

    code = code or str(uuid.uuid4())
    for name, route in walk(get_resolver().url_patterns):
        url = re.sub(r"\(\?P<code>[^)]*\)", code, route)
        url = re.sub(r"\(\?P<fmt>(\w+)[^)]*\)", r"\1", url)  # a format: its first
        url = (
            url.replace("<uuid:code>", code)
            .replace("<slug:slug>", "some-project")
            .replace("<int:pk>", "1")
            .replace("(?P<action>start|pause|resume|cancel|retry|urgent)", "start")
            .replace("^", "")
            .replace("$", "")
            .replace("\\.", ".")
        )
        yield name, "/" + url


def test_no_portal_page_answers_without_a_login(client):
    """Every URL of the portal's apps (found from the URL configuration, so a new
    page cannot forget) sends an anonymous visitor to the login page; every
    call of the API answers 401, asking for a Bearer token."""
    open_to_all = {"login", "logout"}  # logging out needs no account
    checked = api = 0
    for name, url in _portal_urls():
        if name in open_to_all:
            continue
        for method in ("get", "post"):
            response = getattr(client, method)(url)
            if url.startswith("/api/"):
                assert response.status_code == 401, (name, url, method, response.status_code)
                assert response["WWW-Authenticate"].startswith("Bearer"), (name, url)
                continue
            assert response.status_code == 302, (name, url, method, response.status_code)
            assert response["Location"].startswith("/accounts/login/"), (name, url)
        checked += 1
        api += url.startswith("/api/")
    assert checked >= 20 and api >= 12


@pytest.mark.parametrize("bad", ["-" * 36, "z" * 36, "0" * 35, "0" * 8 + "-" * 28])
def test_a_malformed_code_in_any_url_is_a_404(client, alice, bad):
    """Codes that are not UUIDs, in every URL that takes one: 404, never a 500."""
    client.force_login(alice)
    checked = 0
    for name, url in _portal_urls(code=bad):
        if bad not in url:
            continue
        response = client.get(url)
        assert response.status_code == 404, (name, url, response.status_code)
        checked += 1
    assert checked >= 10
