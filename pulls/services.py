"""Writes: every change to nodes, projects and jobs goes through here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User
from pulls import selectors
from pulls.audit.events import audit_record
from pulls.cli.seedconfig import SeedConfig
from pulls.deid.projects import require_identifiable_grant
from pulls.deid.pseudonyms import pseudonyms_given
from pulls.delivery.sending import destinations_for
from pulls.dicom import PacsError, echo
from pulls.dicomweb.session import WebSession
from pulls.jobs import items, queueing
from pulls.models import (
    AuditAction,
    Deidentification,
    ItemStatus,
    Job,
    JobItem,
    JobKind,
    JobStatus,
    Membership,
    PacsNode,
    Project,
    Protocol,
    PseudonymPatient,
    Role,
)
from pulls.workers.runner import node_peer


def node_echo(*, node: PacsNode, user: User | None, request: HttpRequest | None = None) -> str:
    """C-ECHO the node, remember the result for the dashboard, audit it.

    An echo never waits: no queue, no association slot, no rate or window (it is
    how people check a node). Only a suspended node is left alone.
    """
    if node.suspended:
        message = f"not sent: {node.name} is suspended by an operator"
        audit_record(
            action=AuditAction.ECHO, actor=user, request=request, node=node, success=False,
            target=node.name, message=message,
        )  # fmt: skip
        return message
    try:
        if node.is_dicomweb:  # a search for one study: what a DICOMweb server answers to all
            with WebSession(node) as session:
                seconds, what = session.echo(), "QIDO-RS search"
        else:
            seconds, what = echo(node_peer(node)).seconds, "C-ECHO"
    except PacsError as exc:
        ok, message = False, str(exc)
    else:
        ok, message = True, f"{what} succeeded in {seconds * 1000:.1f} ms"
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


def _audit_job(
    action: AuditAction, *, job: Job, user: User, request: HttpRequest | None, details=None
) -> None:
    """A user's action on a job, in the audit log."""
    audit_record(
        action=action, actor=user, request=request, job=job, target=str(job.code),
        details=details,
    )  # fmt: skip


def require_writer(*, user: User, project: Project) -> None:
    """Owners and members may start and change jobs; viewers only look (403)."""
    if selectors.project_role_for(user=user, project=project) not in (Role.OWNER, Role.MEMBER):
        raise PermissionDenied("Viewers cannot start, cancel or retry jobs in this project.")


def _require_node(*, user: User, node: PacsNode) -> None:
    if not selectors.node_list_for_user(user=user).filter(pk=node.pk).exists():
        raise PermissionDenied(f"The node {node.name} is not granted to you.")


def job_create(
    *,
    kind: JobKind,
    owner: User,
    project: Project,
    node: PacsNode,
    rows: Sequence[Mapping[str, str]],
    row_numbers: Sequence[int] | None = None,
    expected: Sequence[int] | None = None,
    sop_classes: Sequence[str] | None = None,
    title: str = "",
    source_name: str = "",
    start: bool = False,
    follows: Job | None = None,
    destination: PacsNode | None = None,
    request: HttpRequest | None = None,
) -> Job:
    """Save a job with one item per row, as a draft to preview or started at once.
    ``expected`` and ``sop_classes``: what a find said of each row's study;
    ``follows``: the job whose failed rows these correct; ``destination``: where
    a retrieval's files are sent when it ends."""
    require_writer(user=owner, project=project)
    _require_node(user=owner, node=node)
    if destination is not None:
        if kind == JobKind.FIND:
            raise ValidationError("A find job retrieves no files: choose no destination.")
        if not destinations_for(owner).filter(pk=destination.pk).exists():
            raise ValidationError(f"{destination.name} is not a destination you may send to.")
    if kind == JobKind.MOVE and node.is_dicomweb:
        # DICOMweb has no C-MOVE: its retrievals come on the connection (WADO-RS), as a C-GET's.
        kind = JobKind.GET
    if kind in (JobKind.MOVE, JobKind.GET):
        require_identifiable_grant(project)
    given = pseudonyms_given(project, rows, row_numbers or range(1, len(rows) + 1))
    with transaction.atomic():
        PseudonymPatient.objects.bulk_create(given)
        job = Job.objects.create(
            kind=kind,
            owner=owner,
            project=project,
            node=node,
            title=title[:200],
            source_name=source_name[:255],
            status=JobStatus.DRAFT,
            follows=follows,
            destination=destination,
        )
        numbers = row_numbers or range(1, len(rows) + 1)
        counts = expected or [0] * len(rows)
        items.items_insert(job, rows, numbers=numbers, expected=counts, sop_classes=sop_classes)
        items.job_refresh_counters(job.pk)
        _audit_job(
            AuditAction.JOB_CREATED,
            job=job,
            user=owner,
            request=request,
            details={
                "kind": kind,
                "rows": len(rows),
                "file": source_name,
                **({"follows": str(follows.code)} if follows is not None else {}),
            },  # fmt: skip
        )
        if start:
            _start(job)
    job.refresh_from_db()
    return job


def _start(job: Job) -> None:
    from pulls.workers.tasks import enqueue_chunks, enqueue_rest

    Job.objects.filter(pk=job.pk, status=JobStatus.DRAFT).update(status=JobStatus.QUEUED)
    job.status = JobStatus.QUEUED
    queueing.items_enqueue(job, enqueue=enqueue_chunks, enqueue_rest=enqueue_rest)


def job_start(*, job: Job, user: User, request: HttpRequest | None = None) -> Job:
    require_writer(user=user, project=job.project)
    _require_node(user=user, node=job.node)
    if job.status != JobStatus.DRAFT:
        raise ValidationError("This job has already been started.")
    _require_space(job)
    with transaction.atomic():
        _start(job)
    job.refresh_from_db()
    return job


def job_cancel(*, job: Job, user: User, request: HttpRequest | None = None) -> Job:
    """Stop a job: pending rows are cancelled; rows being worked on finish first."""
    require_writer(user=user, project=job.project)
    if job.status not in (JobStatus.DRAFT, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED):
        raise ValidationError("This job has already ended.")
    with transaction.atomic():
        now = timezone.now()
        Job.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED, finished_at=now)
        JobItem.objects.filter(job=job, status=ItemStatus.PENDING).update(
            status=ItemStatus.CANCELLED, finished_at=now, error_message="cancelled by a user"
        )
        items.job_refresh_counters(job.pk)
        _audit_job(AuditAction.JOB_CANCELLED, job=job, user=user, request=request)
    job.refresh_from_db()
    return job


def _require_space(job: Job) -> None:
    from pulls.jobs.space import DiskFull, check_free_space

    if job.kind in (JobKind.MOVE, JobKind.GET):
        try:
            check_free_space(job.project, then="start the job")
        except DiskFull as exc:
            raise ValidationError(f"Not started: {exc}.") from None


def job_pause(*, job: Job, user: User, request: HttpRequest | None = None) -> Job:
    """Stop sending new work; rows being worked on finish their current step."""
    require_writer(user=user, project=job.project)
    updated = Job.objects.filter(
        pk=job.pk, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)
    ).update(status=JobStatus.PAUSED, waiting_reason=f"paused by {user.get_username()}")
    if not updated:
        raise ValidationError("Only a queued or running job can be paused.")
    _audit_job(AuditAction.JOB_PAUSED, job=job, user=user, request=request)
    job.refresh_from_db()
    return job


def job_resume(*, job: Job, user: User, request: HttpRequest | None = None) -> Job:
    from pulls.workers.tasks import enqueue_chunks, enqueue_rest

    require_writer(user=user, project=job.project)
    _require_node(user=user, node=job.node)
    with transaction.atomic():
        _require_space(job)
        updated = Job.objects.filter(pk=job.pk, status=JobStatus.PAUSED).update(
            status=JobStatus.QUEUED, waiting_reason=""
        )
        if not updated:
            raise ValidationError("Only a paused job can be resumed.")
        job.status = JobStatus.QUEUED
        queueing.items_enqueue(job, enqueue=enqueue_chunks, enqueue_rest=enqueue_rest)
        items.job_refresh_counters(job.pk)  # closes it if nothing was left to do
        _audit_job(AuditAction.JOB_RESUMED, job=job, user=user, request=request)
    job.refresh_from_db()
    return job


def job_retry_failed(*, job: Job, user: User, request: HttpRequest | None = None) -> int:
    """Send the failed rows again, with fresh attempts. Returns how many."""
    from pulls.workers.tasks import enqueue_chunks, enqueue_rest

    require_writer(user=user, project=job.project)
    _require_node(user=user, node=job.node)
    if job.status in (JobStatus.DRAFT, JobStatus.CANCELLED):
        raise ValidationError("Only a started job that is not cancelled can retry rows.")
    with transaction.atomic():
        retried = JobItem.objects.filter(job=job, status=ItemStatus.FAILED).update(
            status=ItemStatus.PENDING,
            attempts=0,
            error_code=None,
            error_message="",
            not_before=None,
            queued_at=None,
            finished_at=None,
        )
        if retried:
            Job.objects.filter(pk=job.pk).update(status=JobStatus.QUEUED, finished_at=None)
            job.status = JobStatus.QUEUED
            queueing.items_enqueue(job, enqueue=enqueue_chunks, enqueue_rest=enqueue_rest)
            items.job_refresh_counters(job.pk)
        _audit_job(
            AuditAction.JOB_RETRIED, job=job, user=user, request=request, details={"rows": retried}
        )
    return retried


def job_mark_urgent(*, job: Job, user: User, request: HttpRequest | None = None) -> Job:
    """Operators only: the job's waiting rows go to the interactive queue, and its
    chunks go ahead of bulk work for the node's association slots."""
    from pulls.workers.tasks import enqueue_chunks, enqueue_rest

    if not user.is_operator:
        raise PermissionDenied("Only operators can mark a job urgent.")
    if job.status in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED):
        raise ValidationError("This job has already ended.")
    with transaction.atomic():
        Job.objects.filter(pk=job.pk).update(urgent=True)
        job.urgent = True
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            # Messages already on the bulk queue find these rows claimed, or
            # claim them first: a row is worked on once either way.
            queueing.items_enqueue(job, enqueue=enqueue_chunks, enqueue_rest=enqueue_rest)
        _audit_job(AuditAction.JOB_URGENT, job=job, user=user, request=request)
    job.refresh_from_db()
    return job


def demo_setup(*, ae_title: str, host: str, port: int, web_url: str = "") -> PacsNode:
    """Register the demo PACS as node DEMO (and, when it serves DICOMweb at
    ``web_url``, as node DEMO-WEB too) and a Demo project owned by the operators."""
    from accounts.models import OPERATORS_GROUP

    with transaction.atomic():
        node, _ = PacsNode.objects.update_or_create(
            name="DEMO",
            defaults={"ae_title": ae_title, "host": host, "port": port, "is_active": True},
        )
        if web_url:
            PacsNode.objects.update_or_create(
                name="DEMO-WEB",
                defaults={"protocol": Protocol.DICOMWEB, "base_url": web_url, "is_active": True},
            )
        project, _ = Project.objects.get_or_create(
            slug="demo", defaults={"name": "Demo", "description": "Try the portal here."}
        )
        for user in User.objects.filter(groups__name=OPERATORS_GROUP):
            Membership.objects.get_or_create(
                project=project, user=user, defaults={"role": Role.OWNER}
            )
    return node


def cli_setup(*, config: SeedConfig, username: str | None) -> tuple[User, Project, PacsNode]:
    """The user, project and node that a seed-compatible command works with.

    The node is the PACS of the config (created or updated, named after its
    address); the project is "Command line" unless the user names one.
    """
    with transaction.atomic():
        if username:
            user = User.objects.get(username=username)
        else:
            # Whoever runs the command line runs the server: "cli" may pull
            # identifiable data (the grant is audited when it is made).
            user, created = User.objects.get_or_create(
                username="cli", defaults={"may_pull_identifiable": True}
            )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
        name = f"cli {config.host_name}@{config.host_ip}:{config.host_port}"[:64]
        node, _ = PacsNode.objects.update_or_create(
            name=name,
            defaults={
                "ae_title": config.host_name,
                "host": config.host_ip,
                "port": config.host_port,
                "calling_ae_title": config.client_name,
                "move_destination": config.client_name,
                "query_model": config.query_model,
                "stall_limit": config.query_break_count,
                "connect_timeout": config.timeout,
                "acse_timeout": config.timeout,
                "dimse_timeout": config.timeout,
                "queries_per_minute": config.queries_per_minute,
                "max_associations": config.max_associations,
                "is_active": True,
            },
        )
        node.granted_users.add(user)
        project, _ = Project.objects.get_or_create(
            slug="command-line", defaults={"name": "Command line"}
        )
        Membership.objects.get_or_create(project=project, user=user, defaults={"role": Role.OWNER})
    return user, project, node


def _counts_from_find(matches, level: str) -> tuple[dict[str, int], dict[str, str]]:
    """Instances per study (series) as the find's matches reported them, where
    they did: the retrieval's first attempt need not ask the PACS again; and the
    SOP classes per study (SOPClassesInStudy), which its C-GET proposes."""
    uid, key = (
        ("series_instance_uid", "NumberOfSeriesRelatedInstances")
        if level == "SERIES"
        else ("study_instance_uid", "NumberOfStudyRelatedInstances")
    )
    counts: dict[str, int] = {}
    classes: dict[str, str] = {}
    rows = matches.values_list(uid, "study_instance_uid", "attributes")
    for unique, study, attributes in rows.iterator(chunk_size=2000):
        value = str(attributes.get(key, "")).strip()
        if value.isdigit() and int(value) > 0:
            counts[unique] = max(counts.get(unique, 0), int(value))
        if named := str(attributes.get("SOPClassesInStudy", "")).strip():
            classes[study] = named
    return counts, classes


def retrieval_create_from_find(
    *,
    find_job: Job,
    user: User,
    method: str,
    level: str = "STUDY",
    modality: str = "",
    description: str = "",
    date_from=None,
    date_to=None,
    only: Sequence[int] | None = None,
    request: HttpRequest | None = None,
) -> Job:
    """A draft C-MOVE/C-GET job for the matches of a find job ("retrieve these"),
    or for those of them whose ids are ``only`` (ticked on the Search page).

    One item per distinct study (or series), keyed by its unique UIDs.
    """
    require_writer(user=user, project=find_job.project)  # before saying anything else
    if find_job.kind != JobKind.FIND:
        raise ValidationError("Only the matches of a find job can be retrieved.")
    matches = selectors.job_matches(
        job=find_job,
        modality=modality,
        description=description,
        date_from=date_from,
        date_to=date_to,
    ).order_by()
    if only is not None:
        matches = matches.filter(pk__in=list(only))
    patient_root = find_job.node.query_model == "P"
    if level == "SERIES":
        keys = (
            matches.exclude(series_instance_uid="")
            .values_list("patient_id", "study_instance_uid", "series_instance_uid")
            .distinct()
        )
        if not keys and matches.exists():
            raise ValidationError(
                "These matches name no series: retrieve whole studies, or run a SERIES-level find."
            )
    else:
        keys = (
            matches.exclude(study_instance_uid="")
            .values_list("patient_id", "study_instance_uid")
            .distinct()
        )
    rows = []
    counts, classes = _counts_from_find(matches, level)
    expected, sop_classes = [], []
    for key in sorted(set(keys)):
        row = {"QueryRetrieveLevel": level, "StudyInstanceUID": key[1]}
        if level == "SERIES":
            row["SeriesInstanceUID"] = key[2]
        if patient_root:
            row["PatientID"] = key[0]
        rows.append(row)
        expected.append(counts.get(key[-1], 0))
        sop_classes.append(classes.get(key[1], ""))
    if not rows:
        if matches.exists():
            raise ValidationError(
                "These matches have no StudyInstanceUID: run the find again with "
                "StudyInstanceUID as a return key (an empty column)."
            )
        missing = selectors.filters_without_keys(
            job=find_job, modality=modality, description=description, date_from=date_from,
            date_to=date_to,
        )  # fmt: skip
        raise ValidationError(
            "No matches to retrieve with these filters"
            + (f": {'; '.join(missing)}." if missing else ".")
        )
    kind = JobKind.GET if method == "get" else JobKind.MOVE
    return job_create(
        kind=kind,
        owner=user,
        project=find_job.project,
        node=find_job.node,
        rows=rows,
        expected=expected,
        sop_classes=sop_classes,
        title=f"Retrieve: {find_job.title or find_job.code}",
        source_name=f"find job {find_job.code}",
        request=request,
    )


def cli_project(
    *, owner: User, job_title: str, storage: Path, pseudonymise: bool = False
) -> Project:
    """The project of a command-line retrieval: its files go to ``storage``.
    Pseudonymised: the Basic Profile with Retain Longitudinal Temporal
    Information with Modified Dates (no other option), a project of its own;
    the two never share a folder."""
    from django.utils.text import slugify

    mode = "pseudonymised" if pseudonymise else "identifiable"
    slug = f"cli-{slugify(job_title)}"[:48] + ("-pseudonymised" if pseudonymise else "")
    other = (
        Project.objects.filter(storage_path=str(storage.resolve()))
        .exclude(slug=slug)
        .filter(instances__isnull=False)
        .first()
    )
    if other is not None:
        raise ValidationError(
            f"{storage} holds the files of an earlier {other.deidentification} run of "
            f"{job_title!r}: give this {mode} run another job_title or --out"
        )
    project, _ = Project.objects.update_or_create(
        slug=slug,
        defaults={
            "name": f"Command line: {job_title}{' (pseudonymised)' if pseudonymise else ''}"[:200],
            "storage_path": str(storage.resolve()),
        },
        create_defaults={
            "name": f"Command line: {job_title}{' (pseudonymised)' if pseudonymise else ''}"[:200],
            "storage_path": str(storage.resolve()),
            "deidentification": Deidentification.PSEUDONYMISED
            if pseudonymise
            else Deidentification.IDENTIFIABLE,
            "retain_dates": True,
            "clean_descriptors": False,
        },
    )
    Membership.objects.get_or_create(project=project, user=owner, defaults={"role": Role.OWNER})
    return project
