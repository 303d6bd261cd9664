"""The account page: who you are here, what you may reach, your recent sign-ins."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from pulls import selectors
from pulls.models import AuditAction, AuditEvent


@login_required
def account(request: HttpRequest) -> HttpResponse:
    user = request.user
    context = {
        "memberships": user.memberships.select_related("project").order_by("project__name"),
        "nodes": selectors.node_list_for_user(user=user),
        "groups": user.groups.order_by("name"),
        "logins": AuditEvent.objects.filter(
            actor=user, action__in=(AuditAction.LOGIN, AuditAction.LOGOUT)
        )[:10],
        "failed_logins": AuditEvent.objects.filter(
            action=AuditAction.LOGIN_FAILED, target=user.get_username()
        )[:5],
        "nav": "account",
    }
    return render(request, "registration/account.html", context)
