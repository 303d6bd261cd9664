"""Reads, always scoped to what the user may see (outsiders get 404, not 403)."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import User
from pulls.models import (
    AuditEvent,
    FindResult,
    ItemStatus,
    Job,
    JobItem,
    JobKind,
    JobStatus,
    Membership,
    PacsNode,
    Project,
    Role,
)
from pulls.queries.lookups import like_pattern


def node_list_for_user(*, user: User) -> QuerySet[PacsNode]:
    if user.is_operator:
        return PacsNode.objects.all()
    return (
        PacsNode.objects.filter(is_active=True)
        .filter(Q(granted_users=user) | Q(granted_groups__user=user))
        .distinct()
    )


def node_get_for_user(*, user: User, code: str) -> PacsNode:
    return get_object_or_404(node_list_for_user(user=user), code=code)


def project_list_for_user(*, user: User) -> QuerySet[Project]:
    if user.is_operator:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def membership_for(*, user: User, project: Project) -> Membership | None:
    return Membership.objects.filter(user=user, project=project).first()


def membership_role(*, user: User, project: Project) -> str | None:
    """The user's role by membership alone (operators are not owners here):
    what the pseudonym mapping asks of who sees it."""
    membership = membership_for(user=user, project=project)
    return membership.role if membership else None


def project_role_for(*, user: User, project: Project) -> str | None:
    """The user's role in the project; operators act as owners everywhere."""
    if user.is_operator:
        return Role.OWNER
    membership = membership_for(user=user, project=project)
    return membership.role if membership else None


def writable_projects_for(*, user: User) -> QuerySet[Project]:
    if user.is_operator:
        return Project.objects.all()
    return Project.objects.filter(
        memberships__user=user, memberships__role__in=(Role.OWNER, Role.MEMBER)
    ).distinct()


def job_items(*, job: Job, status: str = "") -> QuerySet[JobItem]:
    items = JobItem.objects.filter(job=job).order_by("row")
    if status in ItemStatus.values:
        items = items.filter(status=status)
    return items


MATCH_SORTS = {
    "date": ("study_date", "id"),
    "-date": ("-study_date", "-id"),
    "patient": ("patient_id", "id"),
    "modality": ("modality", "id"),
    "accession": ("accession_number", "id"),
    # Items are saved in row order (jobs.items.items_insert): their keys sort
    # as their rows do, and an index holds them (no join, no sort of the job).
    "row": ("item_id", "id"),
}


def description_filter(pattern: str) -> Q:
    """Matches whose StudyDescription or SeriesDescription fits ``pattern``,
    case-insensitively: with DICOM's wildcards (``*`` any run of characters,
    ``?`` one) the whole description must fit it; without, it contains it."""
    pattern = pattern.strip()
    if "*" not in pattern and "?" not in pattern:
        return Q(study_description__icontains=pattern) | Q(series_description__icontains=pattern)
    like = like_pattern(pattern)
    return Q(study_description__ilike=like) | Q(series_description__ilike=like)


def job_matches(
    *,
    job: Job,
    modality: str = "",
    date_from=None,
    date_to=None,
    description: str = "",
    sort: str = "row",
) -> QuerySet[FindResult]:
    matches = FindResult.objects.filter(job=job)
    if modality:
        matches = matches.filter(modality__icontains=modality)
    if date_from:
        matches = matches.filter(study_date__gte=date_from)
    if date_to:
        matches = matches.filter(study_date__lte=date_to)
    if description:
        matches = matches.filter(description_filter(description))
    return matches.order_by(*MATCH_SORTS.get(sort, MATCH_SORTS["row"])).select_related("item")


def filters_without_keys(
    *, job: Job, modality: str = "", description: str = "", date_from=None, date_to=None, **_
) -> list[str]:
    """Filters that name a key the PACS returned for none of the job's matches
    (they would keep nothing, and the person should know why)."""
    matches = FindResult.objects.filter(job=job)
    said = []
    if modality and not matches.exclude(modality="").exists():
        said.append("Modality (nor ModalitiesInStudy)")
    if (
        description
        and not matches.filter(Q(study_description__gt="") | Q(series_description__gt="")).exists()
    ):
        said.append("StudyDescription (nor SeriesDescription)")
    if (date_from or date_to) and not matches.exclude(study_date=None).exists():
        said.append("StudyDate")
    return [
        f"the PACS returned no {key} for any of these matches, so a filter on it keeps "
        "nothing: clear that filter, or ask an operator whether the node leaves the key out"
        for key in said
    ]


def job_rows_to_correct(*, job: Job) -> int:
    """Rows of a finished job that failed or (a find's) matched nothing."""
    if job.status not in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED):
        return 0
    wanted = Q(status=ItemStatus.FAILED)
    if job.kind == JobKind.FIND:
        wanted |= Q(status=ItemStatus.DONE, matches=0)
    return job.items.filter(wanted).count()


def job_list_for_user(*, user: User) -> QuerySet[Job]:
    jobs = Job.objects.select_related("project", "node", "owner")
    if user.is_operator:
        return jobs
    return jobs.filter(project__memberships__user=user).distinct()


def job_get_for_user(*, user: User, code: str) -> Job:
    return get_object_or_404(job_list_for_user(user=user), code=code)


def audit_list_for_user(*, user: User) -> QuerySet[AuditEvent]:
    """Operators see the whole log; others the events of their projects and their own."""
    events = AuditEvent.objects.select_related("node", "project", "job")
    if user.is_operator:
        return events
    projects = Project.objects.filter(memberships__user=user).values("pk")
    return events.filter(Q(project__in=projects) | Q(actor=user))


def audit_filter(
    events: QuerySet[AuditEvent],
    *,
    action: str = "",
    actor: str = "",
    node: PacsNode | None = None,
    project: Project | None = None,
    success: str = "",
    date_from=None,
    date_to=None,
    text: str = "",
) -> QuerySet[AuditEvent]:
    if action:
        events = events.filter(action=action)
    if actor:
        events = events.filter(actor_label__icontains=actor)
    if node is not None:
        events = events.filter(node=node)
    if project is not None:
        events = events.filter(project=project)
    if success in ("yes", "no"):
        events = events.filter(success=success == "yes")
    if date_from:
        events = events.filter(at__date__gte=date_from)
    if date_to:
        events = events.filter(at__date__lte=date_to)
    if text:
        events = events.filter(Q(target__icontains=text) | Q(message__icontains=text))
    return events


def project_get_for_user(*, user: User, slug: str) -> Project:
    return get_object_or_404(project_list_for_user(user=user), slug=slug)
