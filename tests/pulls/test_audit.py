"""The audit log is append-only: not in the admin, not through the ORM, not in SQL."""

import pytest
from django.db import DatabaseError, connection, transaction

from pulls.audit.events import audit_record
from pulls.models import AuditAction, AuditEvent, AuditEventIsAppendOnly


@pytest.fixture
def event(operator):
    return audit_record(action=AuditAction.ECHO, actor=operator, target="DEMO", message="ok")


@pytest.fixture
def superuser(db, django_user_model):
    return django_user_model.objects.create_superuser("root", password="root-password-1")


def test_the_admin_lists_events(client, superuser, event):
    client.force_login(superuser)
    response = client.get("/admin/pulls/auditevent/")
    assert response.status_code == 200
    assert "DEMO" in response.content.decode()


def test_the_admin_offers_no_add_change_or_delete(client, superuser, event):
    client.force_login(superuser)
    assert client.get("/admin/pulls/auditevent/add/").status_code == 403
    assert client.get(f"/admin/pulls/auditevent/{event.pk}/delete/").status_code == 403
    # The change page is read-only: posting new values changes nothing.
    response = client.post(
        f"/admin/pulls/auditevent/{event.pk}/change/", {"message": "edited", "target": "X"}
    )
    assert response.status_code == 403
    bulk = client.post(
        "/admin/pulls/auditevent/",
        {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    event.refresh_from_db()
    assert (event.message, event.target) == ("ok", "DEMO")
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_the_orm_refuses_changes_and_deletes(event):
    event.message = "edited"
    with pytest.raises(AuditEventIsAppendOnly):
        event.save()
    with pytest.raises(AuditEventIsAppendOnly):
        event.delete()
    with pytest.raises(AuditEventIsAppendOnly):
        AuditEvent.objects.filter(pk=event.pk).update(message="edited")
    with pytest.raises(AuditEventIsAppendOnly):
        AuditEvent.objects.all().delete()
    # bulk_update runs in an atomic block without savepoint: give it its own.
    with pytest.raises(AuditEventIsAppendOnly), transaction.atomic():
        AuditEvent.objects.bulk_update([event], ["message"])
    assert AuditEvent.objects.get(pk=event.pk).message == "ok"


def test_the_database_refuses_raw_updates_and_deletes(event):
    for sql in (
        "UPDATE pulls_auditevent SET message = 'edited'",
        "DELETE FROM pulls_auditevent",
    ):
        with (
            pytest.raises(DatabaseError, match="append-only"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(sql)
    assert AuditEvent.objects.get(pk=event.pk).message == "ok"
