"""A project's webhook: the job's summary POSTed as JSON, signed.

``X-Pacsnpull-Signature: sha256=<hex>`` is the HMAC-SHA256 of the body with the
project's webhook secret (shown to its owners); ``X-Pacsnpull-Timestamp`` and
the body's ``job`` let a receiver drop replays. A delivery is tried again with
backoff (PACSNPULL_WEBHOOK_RETRY_SECONDS, doubling) until it is answered 2xx
or PACSNPULL_WEBHOOK_ATTEMPTS are used; its owners see each failure.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from datetime import timedelta

import httpx
from django.conf import settings
from django.utils import timezone

from pulls.models import Job, WebhookDelivery
from pulls.notifications.summary import job_summary

TIMEOUT_SECONDS = 10


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# A try this long overdue lost its message: the reconciler queues it again.
OVERDUE = timedelta(minutes=15)


def delivery_create(job: Job) -> WebhookDelivery | None:
    if not job.project.webhook_url:
        return None
    return WebhookDelivery.objects.create(
        project=job.project, job=job, url=job.project.webhook_url, next_attempt_at=timezone.now()
    )


def overdue(now=None) -> list[int]:
    """Pending deliveries whose next try is long past, marked as tried now."""
    now = now or timezone.now()
    found = list(
        WebhookDelivery.objects.filter(
            status=WebhookDelivery.PENDING, next_attempt_at__lt=now - OVERDUE
        ).values_list("pk", flat=True)[:200]
    )
    WebhookDelivery.objects.filter(pk__in=found).update(next_attempt_at=now)
    return found


def deliver(delivery: WebhookDelivery) -> float | None:
    """One try; the seconds until the next one, or None when it is over."""
    delivery = WebhookDelivery.objects.select_related("job__project", "job__node").get(
        pk=delivery.pk
    )
    if delivery.status != WebhookDelivery.PENDING:
        return None
    body = json.dumps(job_summary(delivery.job), sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "pacsnpull-webhook",
        "X-Pacsnpull-Signature": signature(delivery.project.webhook_secret, body),
        "X-Pacsnpull-Timestamp": str(int(time.time())),
    }
    delivery.attempts += 1
    try:
        answer = httpx.post(
            delivery.url, content=body, headers=headers, timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        delivery.response_code, delivery.error = None, f"{type(exc).__name__}: {exc}"[:500]
    else:
        delivery.response_code = answer.status_code
        delivery.error = "" if answer.is_success else f"answered {answer.status_code}"
    if delivery.response_code is not None and 200 <= delivery.response_code < 300:
        delivery.status, delivery.delivered_at = WebhookDelivery.DELIVERED, timezone.now()
        delivery.save()
        return None
    if delivery.attempts >= settings.PACSNPULL_WEBHOOK_ATTEMPTS:
        delivery.status = WebhookDelivery.FAILED
        delivery.save()
        return None
    wait = settings.PACSNPULL_WEBHOOK_RETRY_SECONDS * 2 ** (delivery.attempts - 1)
    delivery.next_attempt_at = timezone.now() + timedelta(seconds=wait)
    delivery.save()
    return wait
