"""The dashboard and node pages: who sees which node, and echo from the browser."""

import pytest

from pulls.models import AuditAction, AuditEvent
from tests.conftest import make_node


@pytest.fixture
def hidden_node(db):
    return make_node("SECRET", 104, "SECRETPACS")


def test_the_dashboard_lists_the_nodes_granted_to_the_user(
    client, alice, orthanc_node, hidden_node
):
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert "ORTHANC" in page
    assert "SECRET" not in page


def test_operators_see_every_node(client, operator, orthanc_node, hidden_node):
    client.force_login(operator)
    page = client.get("/").content.decode()
    assert "ORTHANC" in page
    assert "SECRET" in page


def test_a_node_granted_to_a_group_is_visible_to_its_members(
    client, charlie, hidden_node, django_user_model
):
    from django.contrib.auth.models import Group

    group = Group.objects.create(name="radiology")
    charlie.groups.add(group)
    hidden_node.granted_groups.add(group)
    client.force_login(charlie)
    assert client.get(f"/nodes/{hidden_node.code}/").status_code == 200


def test_it_checks_access_to_the_node_page(client, charlie, orthanc_node):
    client.force_login(charlie)
    assert client.get(f"/nodes/{orthanc_node.code}/").status_code == 404
    assert client.post(f"/nodes/{orthanc_node.code}/echo/").status_code == 404
    assert not AuditEvent.objects.filter(action=AuditAction.ECHO).exists()


def test_echo_from_the_browser_succeeds_and_is_audited(client, alice, orthanc_node):
    client.force_login(alice)
    response = client.post(f"/nodes/{orthanc_node.code}/echo/", follow=True)
    page = response.content.decode()
    assert "ORTHANC: C-ECHO succeeded" in page
    orthanc_node.refresh_from_db()
    assert orthanc_node.last_echo_ok is True
    event = AuditEvent.objects.get(action=AuditAction.ECHO)
    assert (event.actor, event.node, event.success) == (alice, orthanc_node, True)


def test_a_failed_echo_shows_the_reason(client, operator, hidden_node):
    hidden_node.connect_timeout = 3
    hidden_node.save()
    client.force_login(operator)
    response = client.post(f"/nodes/{hidden_node.code}/echo/", follow=True)
    page = response.content.decode()
    assert "could not connect to 127.0.0.1:104" in page
    hidden_node.refresh_from_db()
    assert hidden_node.last_echo_ok is False
    assert AuditEvent.objects.get(action=AuditAction.ECHO).success is False


def test_echo_needs_post(client, alice, orthanc_node):
    client.force_login(alice)
    assert client.get(f"/nodes/{orthanc_node.code}/echo/").status_code == 405
