"""Project pages: members and roles, storage use, jobs, the project's audit
events; a new project and its de-identification; the pseudonym mapping, for
its owners alone."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Sum
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render

from pulls import selectors
from pulls.audit.events import audit_record
from pulls.deid.mapping import mapping_csv, mapping_rows
from pulls.deid.projects import project_create, project_set_deidentification
from pulls.delivery.sending import destinations_for
from pulls.models import AuditAction, Job, PseudonymStudy, Role
from pulls.web.delivery import may_download, sendings_shown
from pulls.web.project_forms import DEID_FIELDS, DeidentificationForm, ProjectForm


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
        "is_owner": selectors.membership_role(user=request.user, project=project) == Role.OWNER,
        "may_download": may_download(role, project),
        "destinations": destinations_for(request.user) if role in (Role.OWNER, Role.MEMBER) else [],
        "sendings": sendings_shown(project.sendings.filter(job__isnull=True)),
        "nav": "projects",
    }
    return render(request, "pulls/project_detail.html", context)


def _form_errors(form, exc: ValidationError) -> None:
    if hasattr(exc, "error_dict"):
        for field, errors in exc.message_dict.items():
            form.add_error(field if field in form.fields else None, errors)
    else:
        for message in exc.messages:
            form.add_error(None, message)


@login_required
def project_new(request: HttpRequest) -> HttpResponse:
    """Anyone may make a project (and owns it); pulling into it needs node grants."""
    form = ProjectForm(request.POST or None, submit="Create the project")
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields}
        try:
            project = project_create(user=request.user, fields=fields, request=request)
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, f"The project {project.name} is made; you own it.")
            return redirect("project_detail", slug=project.slug)
    return render(request, "pulls/project_new.html", {"form": form, "nav": "projects"})


@login_required
def project_settings(request: HttpRequest, slug: str) -> HttpResponse:
    """Its owners change the de-identification, until the project holds files."""
    project = selectors.project_get_for_user(user=request.user, slug=slug)
    if selectors.membership_role(user=request.user, project=project) != Role.OWNER:
        raise PermissionDenied("Only the project's owners change its de-identification.")
    form = DeidentificationForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in DEID_FIELDS}
        project.refresh_from_db()  # the form changed the instance; the service compares
        try:
            project_set_deidentification(
                project=project, user=request.user, fields=fields, request=request
            )
        except ValidationError as exc:
            _form_errors(form, exc)
        else:
            messages.success(request, "The de-identification is saved.")
            return redirect("project_detail", slug=project.slug)
    context = {"form": form, "project": project, "nav": "projects"}
    return render(request, "pulls/project_settings.html", context)


def _mapping_project(request: HttpRequest, slug: str):
    """The project, if the user owns it (by membership) and it is pseudonymised;
    anyone else gets 404, as for a project they cannot see."""
    project = selectors.project_get_for_user(user=request.user, slug=slug)
    if not project.is_pseudonymised:
        raise Http404("This project keeps no pseudonyms.")
    if selectors.membership_role(user=request.user, project=project) != Role.OWNER:
        audit_record(
            action=AuditAction.MAPPING, actor=request.user, request=request, project=project,
            success=False, target=f"pseudonym mapping of {project.name}",
            message="refused: only the project's owners see its mapping",
        )  # fmt: skip
        raise PermissionDenied("Only the project's owners see its pseudonym mapping.")
    return project


@login_required
def project_mapping(request: HttpRequest, slug: str) -> HttpResponse:
    project = _mapping_project(request, slug)
    rows = Paginator(list(mapping_rows(project)), 100).get_page(request.GET.get("page"))
    audit_record(
        action=AuditAction.MAPPING, actor=request.user, request=request, project=project,
        target=f"pseudonym mapping of {project.name}",
        details={"viewed": "page", "page": rows.number},
    )  # fmt: skip
    context = {"project": project, "rows": rows, "nav": "projects",
               "studies": PseudonymStudy.objects.filter(project=project).count()}  # fmt: skip
    return render(request, "pulls/project_mapping.html", context)


@login_required
def project_mapping_csv(request: HttpRequest, slug: str) -> StreamingHttpResponse:
    project = _mapping_project(request, slug)
    audit_record(
        action=AuditAction.MAPPING, actor=request.user, request=request, project=project,
        target=f"pseudonym mapping of {project.name}", details={"downloaded": "csv"},
    )  # fmt: skip
    response = StreamingHttpResponse(mapping_csv(project), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{project.slug}-mapping.csv"'
    return response
