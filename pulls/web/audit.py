"""The audit log in the portal: operators see it all, researchers their projects'."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from pulls import selectors
from pulls.audit.events import audit_record
from pulls.jobs.exports import csv_stream
from pulls.models import AuditAction, AuditEvent

EXPORT_COLUMNS = [
    "at", "actor", "ip", "action", "success", "node", "project", "job", "target", "details",
    "message",
]  # fmt: skip


class AuditFilterForm(forms.Form):
    action = forms.ChoiceField(required=False, choices=[("", "any")] + AuditAction.choices)
    actor = forms.CharField(required=False, max_length=150, label="Who")
    node = forms.ModelChoiceField(
        required=False, queryset=None, to_field_name="name", empty_label="any"
    )
    project = forms.ModelChoiceField(
        required=False, queryset=None, to_field_name="slug", empty_label="any"
    )
    success = forms.ChoiceField(
        required=False,
        choices=[("", "any"), ("yes", "succeeded"), ("no", "failed")],
        label="Outcome",
    )
    date_from = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    date_to = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    text = forms.CharField(required=False, max_length=100, label="Target or message contains")

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["node"].queryset = selectors.node_list_for_user(user=user)
        self.fields["project"].queryset = selectors.project_list_for_user(user=user)
        for field in self.fields.values():
            css = "form-select" if isinstance(field.widget, forms.Select) else "form-control"
            field.widget.attrs.setdefault("class", f"{css} {css}-sm")


def _filtered(request: HttpRequest) -> tuple[AuditFilterForm, QuerySet[AuditEvent]]:
    form = AuditFilterForm(request.GET or None, user=request.user)
    events = selectors.audit_list_for_user(user=request.user)
    if form.is_valid():
        events = selectors.audit_filter(events, **form.cleaned_data)
    return form, events


@login_required
def audit_list(request: HttpRequest) -> HttpResponse:
    form, events = _filtered(request)
    page = Paginator(events, 100).get_page(request.GET.get("page"))
    return render(
        request,
        "pulls/audit_list.html",
        {"form": form, "events": page, "nav": "audit", "everything": request.user.is_operator},
    )


def _csv_chunks(events: QuerySet[AuditEvent]) -> Iterator[str]:
    rows = events.values_list(
        "at", "actor_label", "ip", "action", "success", "node__name", "project__slug",
        "job__code", "target", "details", "message",
    ).iterator(chunk_size=2000)  # fmt: skip
    lines = (
        [timezone.localtime(at).isoformat(), *rest[:8],
         json.dumps(rest[8], ensure_ascii=False, sort_keys=True), rest[9]]
        for at, *rest in rows
    )  # fmt: skip
    return csv_stream(EXPORT_COLUMNS, lines)


@login_required
def audit_export(request: HttpRequest) -> HttpResponse:
    form, events = _filtered(request)
    if form.is_bound and not form.is_valid():
        # Never a wider export than asked for: show the filter's errors instead.
        return redirect(f"{reverse('audit_list')}?{request.GET.urlencode()}")
    audit_record(
        action=AuditAction.EXPORT,
        request=request,
        target="audit.csv",
        details={"filters": {k: str(v) for k, v in getattr(form, "cleaned_data", {}).items() if v}},
    )
    response = StreamingHttpResponse(_csv_chunks(events), content_type="text/csv")
    stamp = f"{timezone.localtime():%Y%m%d-%H%M}"
    response["Content-Disposition"] = f'attachment; filename="pacsnpull-audit-{stamp}.csv"'
    return response
