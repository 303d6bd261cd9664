"""Project pages: members and roles, storage use, jobs, the project's audit events."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from pulls import selectors
from pulls.models import Job, Role


@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = (
        selectors.project_list_for_user(user=request.user)
        .annotate(
            n_jobs=Count("jobs", distinct=True),
            n_members=Count("memberships", distinct=True),
        )
        .order_by("name")
    )
    return render(request, "pulls/project_list.html", {"projects": projects, "nav": "projects"})


@login_required
def project_detail(request: HttpRequest, slug: str) -> HttpResponse:
    project = selectors.project_get_for_user(user=request.user, slug=slug)
    role = selectors.project_role_for(user=request.user, project=project)
    usage = project.instances.aggregate(
        n=Count("pk"), size=Sum("size"), studies=Count("study_instance_uid", distinct=True)
    )
    jobs = Paginator(
        Job.objects.filter(project=project, is_search=False).select_related("node", "owner"), 25
    ).get_page(request.GET.get("page"))
    events = selectors.audit_list_for_user(user=request.user).filter(project=project)[:10]
    context = {
        "project": project,
        "role": role,
        "can_write": role in (Role.OWNER, Role.MEMBER),
        "memberships": project.memberships.select_related("user").order_by(
            "role", "user__username"
        ),
        "usage": usage,
        "jobs": jobs,
        "events": events,
        "nav": "projects",
    }
    return render(request, "pulls/project_detail.html", context)
