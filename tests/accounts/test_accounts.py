"""Log in, log out, change password, first-run operator; all audited."""

import pytest
from django.core.management import call_command

from accounts.models import User
from pulls.models import AuditAction, AuditEvent


def test_it_logs_in_and_audits_it(client, alice):
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "alice-password-1"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    event = AuditEvent.objects.get(action=AuditAction.LOGIN)
    assert (event.actor, event.ip, event.success) == (alice, "127.0.0.1", True)


def test_a_failed_login_says_so_and_is_audited(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    event = AuditEvent.objects.get(action=AuditAction.LOGIN_FAILED)
    assert (event.actor, event.actor_label, event.success) == (None, "alice", False)
    assert "wrong" not in str(event.details) + event.message


def test_logout_is_audited(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action=AuditAction.LOGOUT, actor=alice).exists()


def test_pages_need_a_login(client, db):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_password_change_applies_the_validators(client, alice):
    client.force_login(alice)
    response = client.post(
        "/accounts/password/",
        {
            "old_password": "alice-password-1",
            "new_password1": "12345678",
            "new_password2": "12345678",
        },
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "too short" in page
    assert "entirely numeric" in page
    alice.refresh_from_db()
    assert alice.check_password("alice-password-1")


def test_password_change_works_with_a_good_password(client, alice):
    client.force_login(alice)
    response = client.post(
        "/accounts/password/",
        {
            "old_password": "alice-password-1",
            "new_password1": "quiet-harbour-lantern-42",
            "new_password2": "quiet-harbour-lantern-42",
        },
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password("quiet-harbour-lantern-42")


@pytest.mark.django_db
def test_the_first_run_creates_one_operator_and_prints_how_to_log_in(capsys, settings, tmp_path):
    settings.INSTANCE_DIR = tmp_path
    call_command("bootstrap")
    out = capsys.readouterr().out
    user = User.objects.get()
    assert user.username == "operator"
    assert user.is_operator
    password = out.split("password: ")[1].split()[0]
    assert user.check_password(password)
    assert (tmp_path / "first-login.txt").read_text().endswith(f"password: {password}\n")
    call_command("bootstrap")
    assert User.objects.count() == 1
    assert "password:" not in capsys.readouterr().out


@pytest.mark.django_db
def test_operators_may_manage_nodes_in_the_admin(client, operator):
    client.force_login(operator)
    assert client.get("/admin/pulls/pacsnode/add/").status_code == 200
    assert client.get("/admin/pulls/auditevent/").status_code == 200


def test_researchers_do_not_get_into_the_admin(client, alice):
    client.force_login(alice)
    response = client.get("/admin/pulls/pacsnode/")
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
