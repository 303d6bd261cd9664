from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from pulls import selectors, services
from pulls.audit.events import audit_record
from pulls.deid.projects import shown_for
from pulls.jobs import exports, progress
from pulls.limits import health
from pulls.models import ACTIVE_JOB_STATUSES, AuditAction, ItemStatus, JobKind, Role
from pulls.queries import examples
from pulls.retrieval import manifests
from pulls.web.delivery import files_context, tickable
from pulls.web.forms import FindJobForm
from pulls.web.paging import KeysFirstPaginator
from pulls.web.shown import shown_item, shown_match


class SmallControlsMixin:
    """Bootstrap classes for the compact filter forms rendered field by field."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            css = "form-select" if isinstance(field.widget, forms.Select) else "form-control"
            field.widget.attrs.setdefault("class", f"{css} {css}-sm")


def _description_field() -> forms.CharField:
    """Contained in the study's or the series' description, or a pattern with * and ?
    (selectors.description_filter)."""
    return forms.CharField(
        required=False,
        max_length=64,
        label="Study or series description",
        widget=forms.TextInput(attrs={"placeholder": "chest, or CT*AXIAL*"}),
    )


class RetrieveForm(SmallControlsMixin, forms.Form):
    method = forms.ChoiceField(choices=[("move", "C-MOVE"), ("get", "C-GET")])

    def __init__(self, *args, node=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if node is not None and node.is_dicomweb:  # one way only: on the connection
            self.fields["method"].choices = [("get", "WADO-RS")]
            self.initial["method"] = "get"

    level = forms.ChoiceField(choices=[("STUDY", "whole studies"), ("SERIES", "series")])
    modality = forms.CharField(required=False, max_length=16)
    description = _description_field()
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))


class MatchFilterForm(SmallControlsMixin, forms.Form):
    modality = forms.CharField(required=False, max_length=16)
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    description = _description_field()
    sort = forms.ChoiceField(
        required=False, choices=[(k, k) for k in selectors.MATCH_SORTS], initial="row"
    )


def _recent_jobs(request: HttpRequest):
    """The user's own jobs, running ones first, then the latest."""
    jobs = selectors.job_list_for_user(user=request.user).filter(
        owner=request.user, is_search=False
    )
    running = list(jobs.filter(status__in=ACTIVE_JOB_STATUSES)[:20])
    recent = list(jobs.exclude(status__in=ACTIVE_JOB_STATUSES)[: max(5, 15 - len(running))])
    return [progress.job_progress(job) for job in running + recent]


def _health(request: HttpRequest) -> dict:
    nodes = selectors.node_list_for_user(user=request.user).filter(is_active=True)
    return {
        "node_health": [health.node_health(node) for node in nodes],
        "workers": health.workers_alive(),
        "storage": health.storage_state(),
        "now_local": health.now_local(),
    }


@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    context = {"jobs": _recent_jobs(request), "nav": "dashboard", **_health(request)}
    return render(request, "pulls/dashboard.html", context)


@login_required
def dashboard_live(request: HttpRequest) -> HttpResponse:
    """The dashboard's live parts (jobs and health), refreshed by live.js."""
    context = {"jobs": _recent_jobs(request), "back_to": reverse("dashboard"), **_health(request)}
    return render(request, "pulls/_dashboard_live.html", context)


@login_required
def node_list(request: HttpRequest) -> HttpResponse:
    return render(request, "pulls/node_list.html", {"nav": "nodes", **_health(request)})


@login_required
def node_detail(request: HttpRequest, code: str) -> HttpResponse:
    node = selectors.node_get_for_user(user=request.user, code=code)
    context = {
        "node": node,
        "state": health.node_health(node),
        "scp_port": settings.PACSNPULL_SCP_PORT,
        "scp_host": settings.PACSNPULL_SCP_HOST,
        "nav": "nodes",
    }
    return render(request, "pulls/node_detail.html", context)


@login_required
@require_POST
def node_echo(request: HttpRequest, code: str) -> HttpResponse:
    node = selectors.node_get_for_user(user=request.user, code=code)
    message = services.node_echo(node=node, user=request.user, request=request)
    if node.suspended:
        messages.warning(request, f"{node.name}: {message}")
    elif node.last_echo_ok:
        messages.success(request, f"{node.name}: {message}")
    else:
        messages.error(request, f"{node.name}: {message}")
    return _back(request, "node_detail", code=node.code)


def _back(request: HttpRequest, default: str, **kwargs) -> HttpResponse:
    """To the page the form was on (a local "next"), else to ``default``."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect(default, **kwargs)


@login_required
def job_new(request: HttpRequest) -> HttpResponse:
    form = FindJobForm(
        request.POST or None,
        request.FILES or None,
        user=request.user,
        initial={"project": request.GET.get("project"), "follows": request.GET.get("follows")},
    )
    if request.method == "POST" and form.is_valid():
        parsed = form.parsed
        try:
            job = services.job_create(
                kind=JobKind(form.cleaned_data["kind"]),
                owner=request.user,
                project=form.cleaned_data["project"],
                node=form.cleaned_data["node"],
                rows=parsed.rows,
                row_numbers=parsed.numbers,
                title=form.cleaned_data["title"],
                source_name=form.source_name,
                follows=form.followed,
                destination=form.cleaned_data.get("destination"),
                request=request,
            )
        except ValidationError as exc:  # what the project's mapping or grants say
            for message in exc.messages:
                form.add_error(None, message)
        else:
            merged = parsed.merged_text()
            messages.info(
                request,
                f"{len(parsed.rows)} rows are valid"
                + (f" ({merged})" if merged else "")
                + ". Check the preview, then start the job.",
            )
            return redirect("job_detail", code=job.code)
    return render(request, "pulls/job_new.html", {"form": form, "nav": "new"})


def _page(request: HttpRequest, queryset, param: str, per_page: int = 50, *, wide=False):
    paginator = (KeysFirstPaginator if wide else Paginator)(queryset, per_page)
    return paginator.get_page(request.GET.get(param))


def _job_page(
    request: HttpRequest, job, *, retrieve_form: RetrieveForm | None = None, status: int = 200
) -> HttpResponse:
    role = selectors.project_role_for(user=request.user, project=job.project)
    row_status = request.GET.get("status", "")
    filters = MatchFilterForm(request.GET or None)
    cleaned = filters.cleaned_data if filters.is_valid() else {}
    match_args = {k: v for k, v in cleaned.items() if v}
    matches = _page(
        request, selectors.job_matches(job=job, **match_args), "matches_page", wide=True
    )
    shown = shown_for(project=job.project, user=request.user)
    rows = _page(request, selectors.job_items(job=job, status=row_status), "rows_page")
    if shown is not None:  # a viewer of a pseudonymised project: values as in its files
        matches.object_list = [shown_match(shown, match) for match in matches.object_list]
        rows.object_list = [shown_item(shown, item) for item in rows.object_list]
    context = {
        "job": job,
        "can_write": role in (Role.OWNER, Role.MEMBER),
        "rows": rows,
        "pseudonymised_view": shown is not None,
        "row_status": row_status,
        "row_statuses": ItemStatus.choices,
        "matches": matches,
        "filters": filters,
        # Filters that keep nothing because the PACS did not return their key.
        "filter_notes": (
            selectors.filters_without_keys(job=job, **match_args)
            if match_args and not matches.paginator.count
            else []
        ),
        "retrieve_form": retrieve_form
        or RetrieveForm(initial={"method": job.node.retrieve_method}, node=job.node),
        "progress": progress.job_progress(job),
        "failed_format": examples.format_of(job.source_name),
        "rows_to_correct": selectors.job_rows_to_correct(job=job),
        **files_context(job, role, request.user),
        "nav": "jobs",
    }
    return render(request, "pulls/job_detail.html", context, status=status)


@login_required
def job_detail(request: HttpRequest, code: str) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)
    return _job_page(request, job)


def _job_action(request: HttpRequest, code: str, action, done: str) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)
    try:
        result = action(job=job, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, done.format(result=result))
    return redirect("job_detail", code=job.code)


@login_required
def job_progress(request: HttpRequest, code: str) -> HttpResponse:
    """The job page's live part, refreshed by live.js."""
    job = selectors.job_get_for_user(user=request.user, code=code)
    return render(request, "pulls/_job_progress.html", {"progress": progress.job_progress(job)})


@login_required
def job_rows(request: HttpRequest, code: str) -> HttpResponse:
    """The job page's rows table (same filter and page), refreshed by live.js."""
    job = selectors.job_get_for_user(user=request.user, code=code)
    status = request.GET.get("status", "")
    rows = _page(request, selectors.job_items(job=job, status=status), "rows_page")
    shown = shown_for(project=job.project, user=request.user)
    if shown is not None:
        rows.object_list = [shown_item(shown, item) for item in rows.object_list]
    role = selectors.project_role_for(user=request.user, project=job.project)
    context = {"job": job, "rows": rows, "tickable": tickable(job, role)}
    return render(request, "pulls/_job_rows.html", context)


@login_required
@require_POST
def job_urgent(request: HttpRequest, code: str) -> HttpResponse:
    return _job_action(
        request, code, services.job_mark_urgent, "The job is urgent: it goes ahead of bulk work."
    )


@login_required
@require_POST
def job_start(request: HttpRequest, code: str) -> HttpResponse:
    return _job_action(request, code, services.job_start, "The job is queued.")


@login_required
@require_POST
def job_cancel(request: HttpRequest, code: str) -> HttpResponse:
    return _job_action(request, code, services.job_cancel, "The job is cancelled.")


@login_required
@require_POST
def job_pause(request: HttpRequest, code: str) -> HttpResponse:
    return _job_action(request, code, services.job_pause, "The job is paused.")


@login_required
@require_POST
def job_resume(request: HttpRequest, code: str) -> HttpResponse:
    return _job_action(request, code, services.job_resume, "The job is resumed.")


@login_required
@require_POST
def job_retry(request: HttpRequest, code: str) -> HttpResponse:
    return _job_action(
        request, code, services.job_retry_failed, "{result} failed rows queued again."
    )


@login_required
def job_export(request: HttpRequest, code: str, fmt: str) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)
    audit_record(
        action=AuditAction.EXPORT,
        request=request,
        job=job,
        target=f"matches.{fmt}",
        details={"format": fmt, "matches": job.matches, "rows": job.items_total},
    )
    name = f"pacsnpull-{job.code}-matches.{fmt}"
    shown = shown_for(project=job.project, user=request.user)
    if fmt == "xlsx":
        response = HttpResponse(
            exports.xlsx_bytes(job, shown),
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
    else:
        response = StreamingHttpResponse(exports.csv_chunks(job, shown), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@login_required
@require_POST
def job_retrieve(request: HttpRequest, code: str) -> HttpResponse:
    find_job = selectors.job_get_for_user(user=request.user, code=code)
    form = RetrieveForm(request.POST, node=find_job.node)
    if form.is_valid():
        try:
            job = services.retrieval_create_from_find(
                find_job=find_job, user=request.user, request=request, **form.cleaned_data
            )
        except ValidationError as exc:
            form.add_error(None, " ".join(exc.messages))
    if form.errors:
        # The job page again, the form as it was typed, saying what is wrong.
        return _job_page(request, find_job, retrieve_form=form, status=400)
    messages.info(request, f"{job.items_total} items to retrieve. Start the job when ready.")
    return redirect("job_detail", code=job.code)


@login_required
def job_failed_rows(request: HttpRequest, code: str, fmt: str) -> HttpResponse:
    """The rows that failed or matched nothing, as a query file in the format the
    job came in (or the one asked), with the reason in a note column: to correct
    and upload again as a job that follows this one."""
    job = selectors.job_get_for_user(user=request.user, code=code)
    columns, rows = exports.failed_rows(job, shown_for(project=job.project, user=request.user))
    audit_record(
        action=AuditAction.EXPORT,
        request=request,
        job=job,
        target=f"failed.{fmt}",
        details={"format": fmt, "rows": len(rows)},
    )
    response = HttpResponse(
        examples.query_file(rows, columns, fmt), content_type=examples.FORMATS[fmt]
    )
    response["Content-Disposition"] = f'attachment; filename="pacsnpull-{job.code}-failed.{fmt}"'
    return response


@login_required
def query_example(request: HttpRequest, fmt: str) -> HttpResponse:
    """An example query file to start from."""
    response = HttpResponse(examples.example_file(fmt), content_type=examples.FORMATS[fmt])
    response["Content-Disposition"] = f'attachment; filename="pacsnpull-query-example.{fmt}"'
    return response


@login_required
def job_manifest(request: HttpRequest, code: str) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)
    audit_record(
        action=AuditAction.EXPORT,
        request=request,
        job=job,
        target="manifest.csv",
        details={"instances": job.instances_received},
    )
    response = StreamingHttpResponse(manifests.manifest_chunks(job), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="pacsnpull-{job.code}-manifest.csv"'
    return response
