"""The Search page: look up studies without writing a file, expand one into its
series, tick what to retrieve. Each search is a one-row find job (services in
``pulls.search``): the node's limits, the audit and the access checks as for
any job."""

from __future__ import annotations

import datetime as dt

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone

from pulls import selectors
from pulls.jobs import progress
from pulls.models import JobKind, Role
from pulls.search import services as search
from pulls.web.views import SmallControlsMixin


class SearchForm(SmallControlsMixin, forms.Form):
    node = forms.ModelChoiceField(queryset=None, empty_label=None, label="PACS node")
    project = forms.ModelChoiceField(
        queryset=None, empty_label=None, help_text="Where the results and retrievals belong."
    )
    patient_id = forms.CharField(required=False, max_length=64, label="Patient ID")
    patient_name = forms.CharField(
        required=False, max_length=64, label="Name", help_text="Family^Given; * and ? allowed."
    )
    accession_number = forms.CharField(required=False, max_length=16)
    date_from = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="Studies from"
    )
    date_to = forms.DateField(
        required=False, widget=forms.DateInput(attrs={"type": "date"}), label="Studies to"
    )
    modality = forms.CharField(required=False, max_length=16)
    description = forms.CharField(
        required=False, max_length=64, help_text="* and ? allowed, e.g. *THORAX*"
    )
    level = forms.ChoiceField(choices=[("STUDY", "studies"), ("SERIES", "series")])

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["node"].queryset = selectors.node_list_for_user(user=user).filter(
            is_active=True
        )
        self.fields["project"].queryset = selectors.writable_projects_for(user=user)


def _shortcuts(today: dt.date) -> list[tuple[str, dt.date, dt.date]]:
    """Date ranges a click away (links that fill the form: no script needed)."""
    return [
        ("today", today, today),
        ("last 7 days", today - dt.timedelta(days=6), today),
        ("last 30 days", today - dt.timedelta(days=29), today),
        ("last year", today.replace(year=today.year - 1), today),
    ]


@login_required
def search_page(request: HttpRequest) -> HttpResponse:
    form = SearchForm(request.POST or None, user=request.user, initial=request.GET.dict())
    if request.method == "POST" and form.is_valid():
        terms = {k: v for k, v in form.cleaned_data.items() if k not in ("node", "project")}
        try:
            job = search.search_start(
                user=request.user, project=form.cleaned_data["project"],
                node=form.cleaned_data["node"], request=request, **terms,
            )  # fmt: skip
        except ValidationError as exc:
            if hasattr(exc, "error_dict"):
                for field, errors in exc.error_dict.items():
                    form.add_error(None if field == "__all__" else field, errors)
            else:
                form.add_error(None, exc.messages)
        else:
            return redirect("search_results", code=job.code)
    today = timezone.localdate()
    query = request.GET.copy()
    links = []
    for label, start, end in _shortcuts(today):
        query["date_from"], query["date_to"] = start.isoformat(), end.isoformat()
        links.append((label, query.urlencode()))
    status = 400 if form.errors else 200
    context = {"form": form, "shortcuts": links, "nav": "search"}
    return render(request, "pulls/search.html", context, status=status)


@login_required
def search_results(request: HttpRequest, code: str) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)
    if job.kind != JobKind.FIND:
        return redirect("job_detail", code=job.code)
    role = selectors.project_role_for(user=request.user, project=job.project)
    matches = selectors.job_matches(job=job, sort="date")[:500]
    series = job.items.filter(identifier__QueryRetrieveLevel="SERIES").exists()
    context = {
        "job": job,
        "matches": matches,
        "series": series,
        "can_write": role in (Role.OWNER, Role.MEMBER),
        "progress": progress.job_progress(job),
        "nav": "search",
    }
    return render(request, "pulls/search_results.html", context)


def _search_action(request: HttpRequest, code: str, action) -> HttpResponse:
    job = selectors.job_get_for_user(user=request.user, code=code)  # 404 for outsiders
    if request.method != "POST":
        return redirect("search_results", code=job.code)
    try:
        return action(job)
    except PermissionDenied:
        raise
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("search_results", code=job.code)


@login_required
def search_expand(request: HttpRequest, code: str) -> HttpResponse:
    def expand(job):
        series = search.search_expand(
            search=job, user=request.user, study_uid=request.POST.get("study", ""),
            request=request,
        )  # fmt: skip
        return redirect("search_results", code=series.code)

    return _search_action(request, code, expand)


@login_required
def search_retrieve(request: HttpRequest, code: str) -> HttpResponse:
    def retrieve(job):
        ids = [i for i in request.POST.getlist("match") if i.isdigit()]
        method = "get" if request.POST.get("method") == "get" else "move"
        retrieval = search.search_retrieve(
            search=job, user=request.user, match_ids=ids, method=method, request=request
        )
        messages.info(request, f"Retrieving {retrieval.items_total} item(s).")
        return redirect("job_detail", code=retrieval.code)

    return _search_action(request, code, retrieve)


@login_required
def search_save(request: HttpRequest, code: str) -> HttpResponse:
    def save(job):
        saved = search.search_save(
            search=job, user=request.user, title=request.POST.get("title", ""), request=request
        )
        messages.success(request, "The search is kept as a find job of the project.")
        return redirect("job_detail", code=saved.code)

    return _search_action(request, code, save)
