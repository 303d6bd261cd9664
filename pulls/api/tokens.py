"""Personal API tokens: made (shown once), found by their hash, revoked."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import ApiToken
from pulls.audit.events import audit_record
from pulls.models import AuditAction

PREFIX = "pnp_"


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def token_create(
    *,
    user: Any,
    name: str,
    read_only: bool = True,
    days: int | None = None,
    request: HttpRequest | None = None,
    actor_label: str = "",
) -> tuple[ApiToken, str]:
    """A new token of ``user``; returns it and its text (never stored, shown once)."""
    days = days or settings.PACSNPULL_API_TOKEN_DAYS
    if not 1 <= days <= 3650:
        raise ValidationError("A token lasts between 1 and 3650 days.")
    name = (name or "").strip()[:100] or "token"
    text = PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        prefix=text[:12],
        digest=digest_of(text),
        scope=ApiToken.READ if read_only else ApiToken.WRITE,
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit_record(
        action=AuditAction.TOKEN,
        actor=None if actor_label else user,
        actor_label=actor_label,
        request=request,
        target=f"API token {token.prefix}… of {user.get_username()} made",
        details={"name": name, "scope": token.scope, "days": days, "user": user.get_username()},
    )
    return token, text


def token_revoke(*, token: ApiToken, user: Any, request: HttpRequest | None = None) -> None:
    if token.revoked_at is not None:
        return
    ApiToken.objects.filter(pk=token.pk).update(revoked_at=timezone.now())
    audit_record(
        action=AuditAction.TOKEN,
        actor=user,
        request=request,
        target=f"API token {token.prefix}… of {token.user.get_username()} revoked",
        details={"name": token.name, "scope": token.scope},
    )


def token_for(text: str) -> ApiToken | None:
    """The live token with this text (not expired, not revoked), or None."""
    if not text.startswith(PREFIX) or len(text) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(digest=digest_of(text), revoked_at__isnull=True, expires_at__gt=timezone.now())
        .first()
    )
    if token is None or not token.user.is_active:
        return None
    return token
