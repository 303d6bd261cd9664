"""Writing the audit log: every DICOM operation and every access to patient data."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.http import HttpRequest, HttpResponse

from pulls.models import AuditAction, AuditEvent, Job, PacsNode, Project

SYSTEM = "system"

# The request being served, so changes saved anywhere below it (the admin, a
# service) are audited with who made them and from where.
current_request: ContextVar[HttpRequest | None] = ContextVar("current_request", default=None)


class AuditRequestMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            current_request.reset(token)


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted
    # proxy rewrites it, and the audit log must not record a forged address.
    return request.META.get("REMOTE_ADDR") or None


def audit_event(
    *,
    action: AuditAction,
    actor: Any = None,
    actor_label: str = "",
    request: HttpRequest | None = None,
    success: bool = True,
    node: PacsNode | None = None,
    project: Project | None = None,
    job: Job | None = None,
    target: str = "",
    details: dict[str, Any] | None = None,
    message: str = "",
) -> AuditEvent:
    """An audit event, not yet saved (``audit_record`` saves one, ``audit_record_many`` several)."""
    if request is None and actor is None:
        request = current_request.get()
    if actor is None and request is not None and request.user.is_authenticated:
        actor = request.user
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    label = actor_label or (actor.get_username() if actor is not None else SYSTEM)
    if job is not None:
        project = project or job.project
        node = node or job.node
    return AuditEvent(
        action=action,
        actor=actor,
        actor_label=label[:150],
        ip=client_ip(request),
        success=success,
        node=node,
        project=project,
        job=job,
        target=target[:300],
        details=details or {},
        message=message,
    )


def audit_record(**fields: Any) -> AuditEvent:
    """Record one audit event; see ``audit_event`` for the fields."""
    event = audit_event(**fields)
    event.save()
    return event


def audit_record_many(events: list[AuditEvent]) -> None:
    """Record events built by ``audit_event`` with one INSERT (a worker's rows)."""
    if events:
        AuditEvent.objects.bulk_create(events)
