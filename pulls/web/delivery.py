"""Delivery pages: a job's, ticked rows' or a project's files as a streamed ZIP;
deleting them (owners); the project's delivery settings (owners)."""

from __future__ import annotations

import uuid

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from pulls import selectors
from pulls.audit.events import audit_record
from pulls.delivery import deletion
from pulls.delivery.selection import job_selection, project_instances, totals
from pulls.delivery.sending import destinations_for, sending_create
from pulls.delivery.zips import zip_chunks
from pulls.models import AuditAction, JobKind, JobStatus, Project, Role, SendingStatus


class DeliveryForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["viewers_may_download", "nifti", "webhook_url"]

    def clean_webhook_url(self) -> str:
        url = self.cleaned_data["webhook_url"]
        if url and not url.startswith(("https://", "http://")):
            raise forms.ValidationError("A webhook is an http:// or https:// address.")
        return url


def may_download(role: str | None, project: Project) -> bool:
    return role in (Role.OWNER, Role.MEMBER) or (
        role == Role.VIEWER and project.viewers_may_download
    )


def tickable(job, role: str | None) -> bool:
    """Rows get a tick box (files of the ticked rows as ZIP) once the job has run."""
    return may_download(role, job.project) and job.status not in (
        JobStatus.DRAFT,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
    )


def files_context(job, role: str | None, user) -> dict:
    """What the job page shows of its files: downloads, ticks, NIfTI, sendings."""
    converted = list(job.nifti_series.order_by("folder")) if job.kind != JobKind.FIND else []
    return {
        "role": role,
        "sendings": sendings_shown(job.sendings.all()),
        "destinations": destinations_for(user) if role in (Role.OWNER, Role.MEMBER) else [],
        "may_download": may_download(role, job.project),
        "tickable": tickable(job, role),
        "nifti_series": converted,
        "nifti_converted": sum(1 for one in converted if not one.reason),
        "nifti_skipped": [one for one in converted if one.reason],
    }


def _may_download(request: HttpRequest, project: Project) -> None:
    role = selectors.project_role_for(user=request.user, project=project)
    if not may_download(role, project):
        raise PermissionDenied("This project's owners let only owners and members download files.")


def _owner(request: HttpRequest, project: Project) -> None:
    if selectors.project_role_for(user=request.user, project=project) != Role.OWNER:
        raise PermissionDenied("Only the project's owners delete its files.")


def _ticked(request: HttpRequest) -> list[int]:
    """The row numbers ticked in a job's tables; a value that is not one: 400."""
    values = request.GET.getlist("row")
    try:
        rows = [int(value) for value in values]
    except ValueError:
        rows = [0]
    if any(not 0 < row < 2**31 for row in rows):
        raise ValidationError("The ticked rows must be row numbers: tick them again.")
    if len(rows) > 10_000:
        raise ValidationError("Tick at most 10,000 rows, or download the whole job.")
    return rows


def zip_response(request, *, project, instances, folder, job=None, scope, rows=()):
    counted = totals(instances)
    audit_record(
        action=AuditAction.DOWNLOAD,
        request=request,
        project=project,
        job=job,
        target=f"{scope} (ZIP)",
        details={**counted, "rows": list(rows)[:1000]},
    )
    response = StreamingHttpResponse(
        zip_chunks(project, instances, folder), content_type="application/zip"
    )
    response["Content-Disposition"] = f'attachment; filename="{folder}.zip"'
    response["X-Accel-Buffering"] = "no"  # a proxy passes it on as it comes
    return response


@login_required
def job_files_zip(request: HttpRequest, code: str) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)
    _may_download(request, job.project)
    try:
        rows = _ticked(request)
        if job.kind == JobKind.FIND and not rows:
            raise ValidationError(
                "A find job has no files of its own: tick the matches whose retrieved files "
                "you want, or download a retrieval job's files."
            )
        if job.status == JobStatus.DRAFT:
            raise ValidationError("The job has not run: there are no files yet.")
        instances = job_selection(job, rows=rows)
        if not instances.exists():
            raise ValidationError(
                f"The project holds no files of {'these rows' if rows else 'this job'}"
                + (
                    f": they were deleted on {job.files_deleted_at:%Y-%m-%d} by "
                    f"{job.files_deleted_by}."
                    if job.files_deleted_at
                    else "."
                )
            )
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("job_detail", code=job.code)
    scope = f"files of rows {', '.join(map(str, rows[:20]))}" if rows else "files of the job"
    return zip_response(
        request,
        project=job.project,
        instances=instances,
        folder=f"pacsnpull-{job.project.slug}-{str(job.code)[:8]}",
        job=job,
        scope=scope,
        rows=rows,
    )


@login_required
def project_files_zip(request: HttpRequest, slug: str) -> HttpResponse:
    project = selectors.project_get_for_user(user=request.user, slug=slug)
    _may_download(request, project)
    instances = project_instances(project)
    if not instances.exists():
        messages.error(request, "The project holds no files.")
        return redirect("project_detail", slug=project.slug)
    return zip_response(
        request,
        project=project,
        instances=instances,
        folder=f"pacsnpull-{project.slug}",
        scope="all files of the project",
    )


def _confirm(request, *, project, instances, what, back, delete) -> HttpResponse:
    if request.method == "POST":
        try:
            deleted = delete()
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            messages.success(
                request,
                f"{deleted.instances} files ({deleted.bytes / 1e6:.1f} MB) deleted"
                + (
                    f", and the NIfTI of {deleted.nifti_series} series"
                    if deleted.nifti_series
                    else ""
                )
                + ".",
            )
        return back
    context = {"project": project, "what": what, "totals": totals(instances), "nav": "projects"}
    return render(request, "pulls/files_delete.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def job_files_delete(request: HttpRequest, code: str) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)
    _owner(request, job.project)
    return _confirm(
        request,
        project=job.project,
        instances=job_selection(job),
        what=f"the files of the job {job.title or job.code}",
        back=redirect("job_detail", code=job.code),
        delete=lambda: deletion.job_files_delete(job=job, user=request.user, request=request),
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_files_delete(request: HttpRequest, slug: str) -> HttpResponse:
    project = selectors.project_get_for_user(user=request.user, slug=slug)
    _owner(request, project)
    return _confirm(
        request,
        project=project,
        instances=project_instances(project),
        what=f"every file of the project {project.name}",
        back=redirect("project_detail", slug=project.slug),
        delete=lambda: deletion.project_files_delete(
            project=project, user=request.user, request=request
        ),
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_delivery(request: HttpRequest, slug: str) -> HttpResponse:
    """Its owners choose whether viewers download and whether series become NIfTI."""
    project = selectors.project_get_for_user(user=request.user, slug=slug)
    if selectors.project_role_for(user=request.user, project=project) != Role.OWNER:
        raise PermissionDenied("Only the project's owners change its delivery settings.")
    form = DeliveryForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        form.save()  # audited (pulls.audit.changes)
        messages.success(request, "The delivery settings are saved.")
        return redirect("project_detail", slug=project.slug)
    context = {
        "form": form,
        "project": project,
        "webhooks": project.webhooks.select_related("job")[:20],
        "nav": "projects",
    }
    return render(request, "pulls/project_delivery.html", context)


def sendings_shown(sendings) -> list[dict]:
    """Each sending with its counts and the studies that failed (the newest first)."""
    shown = []
    for sending in sendings.select_related("destination").order_by("-created_at")[:10]:
        studies = list(sending.studies.order_by("pk"))
        shown.append(
            {
                "sending": sending,
                "studies": len(studies),
                "done": sum(s.status == SendingStatus.DONE for s in studies),
                "sent": sum(s.instances_sent for s in studies),
                "converted": sum(s.instances_converted for s in studies),
                "failed": [s for s in studies if s.status == SendingStatus.FAILED],
            }
        )
    return shown


def _send(request: HttpRequest, *, project: Project, job=None):
    from pulls.workers.tasks import enqueue_sending

    role = selectors.project_role_for(user=request.user, project=project)
    if role not in (Role.OWNER, Role.MEMBER):
        raise PermissionDenied("Only the project's owners and members send its files.")
    try:
        code = uuid.UUID(request.POST.get("destination") or "")
    except ValueError:
        code = None
    destination = code and destinations_for(request.user).filter(code=code).first()
    try:
        if not destination:
            raise ValidationError("Choose a destination you may send to.")
        sending = sending_create(
            project=project, destination=destination, user=request.user, job=job,
            request=request, enqueue=enqueue_sending,
        )  # fmt: skip
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"{sending.studies.count()} studies are queued to be sent to {destination.name}.",
        )


@login_required
@require_http_methods(["POST"])
def job_send(request: HttpRequest, code: str) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)
    _send(request, project=job.project, job=job)
    return redirect("job_detail", code=job.code)


@login_required
@require_http_methods(["POST"])
def project_send(request: HttpRequest, slug: str) -> HttpResponse:
    project = selectors.project_get_for_user(user=request.user, slug=slug)
    _send(request, project=project)
    return redirect("project_detail", slug=project.slug)
