"""Writing the audit log: every DICOM operation and every access to patient data."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from pulls.models import AuditAction, AuditEvent, Job, PacsNode, Project

SYSTEM = "system"


def client_ip(request: HttpRequest | None) -> str | None:
    if request is None:
        return None
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a trusted
    # proxy rewrites it, and the audit log must not record a forged address.
    return request.META.get("REMOTE_ADDR") or None


def audit_record(
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
    if actor is None and request is not None and request.user.is_authenticated:
        actor = request.user
    if actor is not None and not getattr(actor, "is_authenticated", False):
        actor = None
    label = actor_label or (actor.get_username() if actor is not None else SYSTEM)
    if job is not None:
        project = project or job.project
        node = node or job.node
    return AuditEvent.objects.create(
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
