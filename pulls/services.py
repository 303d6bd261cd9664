"""Writes: every change to nodes, projects and jobs goes through here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User
from pulls import items
from pulls.audit import audit_record
from pulls.dicom import PacsError, echo
from pulls.models import AuditAction, Job, JobItem, JobKind, PacsNode, Project
from pulls.runner import node_peer


def node_echo(*, node: PacsNode, user: User | None, request: HttpRequest | None = None) -> str:
    """C-ECHO the node, remember the result for the dashboard, audit it."""
    try:
        result = echo(node_peer(node))
    except PacsError as exc:
        ok, message = False, str(exc)
    else:
        ok, message = True, f"C-ECHO succeeded in {result.seconds * 1000:.1f} ms"
    PacsNode.objects.filter(pk=node.pk).update(
        last_echo_at=timezone.now(), last_echo_ok=ok, last_echo_message=message[:500]
    )
    audit_record(
        action=AuditAction.ECHO,
        actor=user,
        request=request,
        node=node,
        success=ok,
        target=node.name,
        message=message,
    )
    node.refresh_from_db()
    return message


def job_create(
    *,
    kind: JobKind,
    owner: User,
    project: Project,
    node: PacsNode,
    rows: Sequence[Mapping[str, str]],
    title: str = "",
    request: HttpRequest | None = None,
) -> Job:
    """Save a job with one item per row, then queue it once the rows are committed."""
    from pulls.tasks import enqueue_items

    with transaction.atomic():
        job = Job.objects.create(
            kind=kind, owner=owner, project=project, node=node, title=title[:200]
        )
        JobItem.objects.bulk_create(
            [JobItem(job=job, row=n, identifier=dict(row)) for n, row in enumerate(rows, 1)],
            batch_size=1000,
        )
        items.job_refresh_counters(job.pk)
        audit_record(
            action=AuditAction.JOB_CREATED,
            actor=owner,
            request=request,
            job=job,
            target=str(job.code),
            details={"kind": kind, "rows": len(rows)},
        )
        items.items_enqueue(job, enqueue=enqueue_items)
    job.refresh_from_db()
    return job


def demo_setup(*, ae_title: str, host: str, port: int) -> PacsNode:
    """Register the demo PACS as node DEMO and a Demo project owned by the operators."""
    from accounts.models import OPERATORS_GROUP
    from pulls.models import Membership, Role

    with transaction.atomic():
        node, _ = PacsNode.objects.update_or_create(
            name="DEMO",
            defaults={"ae_title": ae_title, "host": host, "port": port, "is_active": True},
        )
        project, _ = Project.objects.get_or_create(
            slug="demo", defaults={"name": "Demo", "description": "Try the portal here."}
        )
        for user in User.objects.filter(groups__name=OPERATORS_GROUP):
            Membership.objects.get_or_create(
                project=project, user=user, defaults={"role": Role.OWNER}
            )
    return node
