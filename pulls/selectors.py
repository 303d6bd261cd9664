"""Reads, always scoped to what the user may see (outsiders get 404, not 403)."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import User
from pulls.models import Job, Membership, PacsNode, Project


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


def job_list_for_user(*, user: User) -> QuerySet[Job]:
    jobs = Job.objects.select_related("project", "node", "owner")
    if user.is_operator:
        return jobs
    return jobs.filter(project__memberships__user=user).distinct()


def job_get_for_user(*, user: User, code: str) -> Job:
    return get_object_or_404(job_list_for_user(user=user), code=code)
