"""Telling people a job has ended (pulls.notifications): the owner's e-mail
through a real SMTP server (aiosmtpd), the project's webhook to a real HTTP
receiver (signed, tried again with backoff, its failures shown to the owners),
once per job, and through a real Celery worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller

from pulls.cli.inline import run_inline
from pulls.models import AuditAction, AuditEvent, JobStatus, WebhookDelivery
from pulls.notifications import due, webhooks
from pulls.sandbox.procs import free_port
from tests.conftest import SCP_PORT, Worker, find_job, wait_for
from tests.pulls.retrieval_support import QUIET

pytestmark = pytest.mark.services


class Inbox:
    """aiosmtpd's handler: every message it is given."""

    def __init__(self) -> None:
        self.messages = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp(settings):
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", controller.port
    # Django's test set-up swaps in its in-memory backend: the real one, to a real server.
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    try:
        yield inbox
    finally:
        controller.stop()


class Receiver:
    """A local HTTP server that records each POST and answers ``answers`` in turn."""

    def __init__(self, answers: list[int]) -> None:
        self.answers, self.posts = list(answers), []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append((dict(self.headers), body))
                code = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(answers):
        made.append(Receiver(answers))
        return made[-1]

    yield make
    for one in made:
        one.stop()


@pytest.fixture
def ended(alice, project, orthanc_node, dicom_data):
    """A find job of alice that has ended, with matches."""
    alice.email = "alice@hospital.example"
    alice.save()
    patient = sorted(dicom_data.patients)[0]
    rows = [{"QueryRetrieveLevel": "STUDY", "PatientID": patient, "StudyInstanceUID": ""}]
    job = run_inline(find_job(alice, project, orthanc_node, rows, title="cohort A"), **QUIET)
    assert job.status == JobStatus.DONE
    return job


def test_the_owner_is_mailed_once_with_the_counts_and_a_link(smtp, settings, ended, dicom_data):
    settings.PACSNPULL_BASE_URL = "https://pacsnpull.hospital.example"
    assert list(due.jobs_due()) == [ended]
    assert due.notify(ended.pk, deliver=lambda _: None) == {"mails": 1, "webhooks": 0}
    assert due.notify(ended.pk, deliver=lambda _: None) == {"mails": 0, "webhooks": 0}
    assert list(due.jobs_due()) == []
    [(to, mail)] = smtp.messages
    assert to == ["alice@hospital.example"]
    assert mail["Subject"] == "pacsnpull: cohort A is done"
    text = mail.get_payload()
    assert f"https://pacsnpull.hospital.example/jobs/{ended.code}/" in text
    assert f"{ended.matches} matches" in text and "1 done, 0 failed" in text
    for inst in dicom_data.instances:  # counts and a link; nobody's name or ID
        assert inst.patient_id not in text and inst.patient_name not in text
    assert AuditEvent.objects.filter(action=AuditAction.NOTIFY, job=ended, success=True).exists()


def test_no_mail_for_who_said_no_or_has_no_address(client, smtp, alice, ended):
    client.force_login(alice)
    client.post("/accounts/notifications/", {})  # the box unticked
    alice.refresh_from_db()
    assert not alice.email_when_jobs_end
    assert due.notify(ended.pk, deliver=lambda _: None)["mails"] == 0
    assert smtp.messages == []


def test_an_smtp_server_that_is_down_is_said_in_the_audit_log(settings, ended):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", free_port()
    due.notify(ended.pk, deliver=lambda _: None)
    event = AuditEvent.objects.get(action=AuditAction.NOTIFY, job=ended)
    assert not event.success and "could not send" in event.message


def test_the_webhook_is_signed_and_tried_again_until_answered(settings, receiver, project, ended):
    settings.PACSNPULL_WEBHOOK_RETRY_SECONDS = 30
    hook = receiver([503, 200])
    project.webhook_url = hook.url
    project.save()
    queued: list[int] = []
    assert due.notify(ended.pk, deliver=queued.append)["webhooks"] == 1
    delivery = WebhookDelivery.objects.get(pk=queued[0])
    assert webhooks.deliver(delivery) == 30  # 503: again in 30 s
    assert webhooks.deliver(delivery) is None  # 200: over
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 2, 200)
    headers, body = hook.posts[-1]
    project.refresh_from_db()
    expected = hmac.new(project.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Pacsnpull-Signature"] == f"sha256={expected}"
    summary = json.loads(body)
    assert summary["job"] == str(ended.code) and summary["status"] == "done"
    assert summary["matches"] == ended.matches and summary["rows"] == 1


def test_a_webhook_that_keeps_failing_is_given_up_and_shown_to_the_owners(
    client, settings, receiver, alice, bob, project, ended
):
    settings.PACSNPULL_WEBHOOK_ATTEMPTS = 3
    settings.PACSNPULL_WEBHOOK_RETRY_SECONDS = 1
    hook = receiver([500])
    project.webhook_url = hook.url
    project.save()
    queued: list[int] = []
    due.notify(ended.pk, deliver=queued.append)
    delivery = WebhookDelivery.objects.get(pk=queued[0])
    waits = [webhooks.deliver(delivery) for _ in range(3)]
    assert waits == [1, 2, None]  # doubling, then over
    delivery.refresh_from_db()
    assert (delivery.status, delivery.error) == ("failed", "answered 500")
    client.force_login(alice)
    page = client.get(f"/projects/{project.slug}/delivery/").content.decode()
    assert "answered 500" in page and project.webhook_secret in page
    client.force_login(bob)  # a viewer: neither the failures nor the secret
    assert client.get(f"/projects/{project.slug}/delivery/").status_code == 403


def test_a_webhook_address_must_be_http(client, alice, project):
    client.force_login(alice)
    answer = client.post(
        f"/projects/{project.slug}/delivery/", {"webhook_url": "file:///etc/passwd"}
    )
    assert answer.status_code == 200 and "Enter a valid URL" in answer.content.decode()
    project.refresh_from_db()
    assert project.webhook_url == ""


def test_a_worker_tells_the_end_by_mail_and_webhook(
    smtp, receiver, redis_url, flushable_db, sandbox, alice, project, orthanc_node, dicom_data,
    settings,
):  # fmt: skip
    hook = receiver([200])
    project.webhook_url = hook.url
    project.save()
    alice.email = "alice@hospital.example"
    alice.save()
    job = run_inline(find_job(alice, project, orthanc_node), **QUIET)
    worker = Worker(
        redis_url=redis_url,
        log_path=sandbox / "notify-worker.log",
        env={
            "EMAIL_HOST": "127.0.0.1",
            "EMAIL_PORT": str(settings.EMAIL_PORT),
            "PACSNPULL_SCP_PORT": str(SCP_PORT),
        },  # fmt: skip
    ).start()
    try:
        from pulls.workers.tasks import reconcile

        reconcile.apply(queue="interactive")  # the reconciler's tick, here: it queues the job
        wait_for(lambda: smtp.messages and hook.posts, timeout=60,
                 what=f"the mail and the webhook; log:\n{worker.log_tail()}")  # fmt: skip
        assert smtp.messages[0][1]["Subject"].startswith("pacsnpull: ")
        assert json.loads(hook.posts[0][1])["job"] == str(job.code)
        assert len(smtp.messages) == 1 and len(hook.posts) == 1
    finally:
        worker.stop()


def test_a_webhook_whose_message_was_lost_is_queued_again(settings, receiver, project, ended):
    from datetime import timedelta

    from django.utils import timezone

    hook = receiver([200])
    project.webhook_url = hook.url
    project.save()
    due.notify(ended.pk, deliver=lambda _: None)  # its message lost on the way
    delivery = WebhookDelivery.objects.get()
    again: list[int] = []
    assert due.queue_due(lambda _: None, again.append) == 0  # not overdue yet
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(hours=1))
    assert due.queue_due(lambda _: None, again.append) == 1 and again == [delivery.pk]
    assert due.queue_due(lambda _: None, again.append) == 0  # queued once
    assert webhooks.deliver(delivery) is None and len(hook.posts) == 1
