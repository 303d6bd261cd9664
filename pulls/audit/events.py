"""Writing the audit log: every DICOM operation and every access to patient data."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

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
    """An audit event, not yet saved (``audit_record`` saves one, ``EventRows`` several)."""
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


# Every column of an event but its id, in the order of _INSERT's values.
_FIELDS = [field for field in AuditEvent._meta.concrete_fields if not field.primary_key]
# SQLite's (see EventRows): built from the model's names only.
_COLUMNS = ", ".join(f'"{field.column}"' for field in _FIELDS)
_INSERT = (
    f'INSERT INTO "{AuditEvent._meta.db_table}" ({_COLUMNS}) '  # noqa: S608
    f"VALUES ({', '.join(['%s'] * len(_FIELDS))})"
)


class EventRows:
    """Audit events with their values ready to insert: built before the
    transaction that records them (``insert``), so that it holds the
    database's write lock for the INSERT alone. On SQLite the other workers'
    claims and outcomes wait for that lock: a worker's batch of 50 finished
    rows held it 8-15 ms, most of them spent making and converting events
    (bench/retrieve.py --corpus, traced). SQLite's rows go with executemany
    (bulk_create compiled each value of each event through the ORM: half of a
    worker's bookkeeping of a one-instance study, cProfile); PostgreSQL's with
    bulk_create's one INSERT (executemany sends each row as a statement of its
    own there). All are recorded at one time; the events are not given ids."""

    def __init__(self, events: list[AuditEvent]) -> None:
        self.events = events
        self.rows: list[list[object]] | None = None
        if not events or connection.vendor != "sqlite":
            return
        now = timezone.now()
        db = connections[DEFAULT_DB_ALIAS]  # not the proxy: it is looked up at each use
        # A batch's events share most values (actor, job, node, action, time):
        # each is converted once (half of the conversions' time for 50 rows).
        converted: dict[tuple[int, type, object], object] = {}
        self.rows = []
        for event in events:
            event.at = now  # auto_now_add, as a save would set it
            row = []
            for index, field in enumerate(_FIELDS):
                value = getattr(event, field.attname)
                if type(value) in (dict, list):  # details: not hashable, and each its own
                    row.append(field.get_db_prep_save(value, db))
                    continue
                key = (index, type(value), value)
                if key not in converted:
                    converted[key] = field.get_db_prep_save(value, db)
                row.append(converted[key])
            self.rows.append(row)

    def insert(self) -> None:
        if self.rows is None:
            if self.events:
                AuditEvent.objects.bulk_create(self.events)
            return
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.executemany(_INSERT, self.rows)
