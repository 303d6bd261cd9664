"""The account page: who you are here, what you may reach, your recent sign-ins."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.models import ApiToken, User
from pulls import selectors
from pulls.api.tokens import token_create, token_revoke
from pulls.models import AuditAction, AuditEvent


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, label="What it is for", initial="script",
        widget=forms.TextInput(attrs={"class": "form-control form-control-sm"}),
    )  # fmt: skip
    scope = forms.ChoiceField(
        choices=[("read", "read-only"), ("write", "read-write")], initial="read", label="Scope",
        widget=forms.Select(attrs={"class": "form-select form-select-sm"}),
    )  # fmt: skip
    days = forms.IntegerField(
        min_value=1, max_value=3650, initial=90, label="Days it lasts",
        widget=forms.NumberInput(attrs={"class": "form-control form-control-sm"}),
    )  # fmt: skip


@login_required
def account(request: HttpRequest, *, token_form: TokenForm | None = None, new_token: str = "",
            status: int = 200) -> HttpResponse:  # fmt: skip
    user = request.user
    context = {
        "token_form": token_form or TokenForm(),
        "new_token": new_token,
        "tokens": user.api_tokens.all()[:50],
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
    return render(request, "registration/account.html", context, status=status)


@login_required
@require_POST
def notifications(request: HttpRequest) -> HttpResponse:
    """Whether the user is mailed when their jobs end."""
    wanted = request.POST.get("email_when_jobs_end") == "on"
    User.objects.filter(pk=request.user.pk).update(email_when_jobs_end=wanted)
    messages.success(
        request,
        "You get an e-mail when a job of yours ends."
        if wanted
        else "You get no e-mail when your jobs end.",
    )
    return redirect("account")


@login_required
@require_POST
def token_new(request: HttpRequest) -> HttpResponse:
    """A new API token, shown on this answer alone (never stored, never redirected to)."""
    form = TokenForm(request.POST)
    if not form.is_valid():
        return account(request, token_form=form, status=400)
    _, text = token_create(
        user=request.user,
        name=form.cleaned_data["name"],
        read_only=form.cleaned_data["scope"] != "write",
        days=form.cleaned_data["days"],
        request=request,
    )
    return account(request, new_token=text)


@login_required
@require_POST
def token_revoke_view(request: HttpRequest, pk: int) -> HttpResponse:
    token = get_object_or_404(ApiToken, pk=pk, user=request.user)
    token_revoke(token=token, user=request.user, request=request)
    messages.success(request, f"The token {token.prefix}… is revoked.")
    return redirect("account")
