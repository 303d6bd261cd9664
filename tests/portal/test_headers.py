"""Headers of pages that may show patient data: never cached, and a
Content-Security-Policy that allows only the portal's own scripts and styles."""

import re

import pytest

from tests.conftest import REPO, find_job, make_node
from tests.pulls.test_pages import _portal_urls


@pytest.fixture
def job(alice, project):
    node = make_node("HEADERS", 104, "HEADERS")
    node.granted_users.add(alice)
    return find_job(alice, project, node, [{"QueryRetrieveLevel": "STUDY", "PatientID": "P1"}])


_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "object-src": "'none'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}


def _policy(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {
        part.split()[0]: " ".join(part.split()[1:]) for part in header.split(";") if part.strip()
    }


@pytest.mark.django_db
def test_every_page_fragment_and_download_is_never_stored_and_has_the_policy(
    client, alice, project, job
):
    client.force_login(alice)
    checked = 0
    for name, url in _portal_urls(code=str(job.code)):
        url = url.replace("some-project", project.slug)
        response = client.get(url)
        if response.status_code >= 400:
            continue  # not for this job (a retrieval's manifest of a find, say)
        cache = response["Cache-Control"]
        assert "no-store" in cache and "private" in cache, (name, cache)
        policy = _policy(response)
        for directive, value in _POLICY.items():
            assert policy.get(directive) == value, (name, directive, policy)
        assert "unsafe-inline" not in response["Content-Security-Policy"]
        checked += 1
    assert checked >= 15


def test_the_login_page_and_the_admin_have_them_too(client, operator):
    for response in (client.get("/accounts/login/"), _admin(client, operator)):
        assert "no-store" in response["Cache-Control"]
        assert _policy(response)["script-src"] == "'self'"


def _admin(client, operator):
    client.force_login(operator)
    return client.get("/admin/pulls/pacsnode/add/")


def test_static_files_keep_their_own_cache_headers(client, db):
    response = client.get("/static/pulls/live.js")
    assert response.status_code == 200
    assert "no-store" not in response.get("Cache-Control", "")


def test_no_template_holds_an_inline_script_or_style():
    """What the policy would block: kept out of every template (a style
    attribute, a <style> or a <script> without src, an on... handler)."""
    inline = re.compile(r'style="|<style|<script(?![^>]*\bsrc=)|\son[a-z]+="', re.IGNORECASE)
    found = [
        f"{path.relative_to(REPO)}: {match.group(0)}"
        for path in (REPO / "templates").rglob("*.html")
        for match in inline.finditer(path.read_text(encoding="utf-8"))
    ]
    assert found == []
