"""How a call is let in: a Bearer token (or the browser's session), the token's
scope (read-only tokens read), and its rate (per token, through Redis)."""

from __future__ import annotations

import functools
import logging
import time

import redis
from django.conf import settings
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.throttling import BaseThrottle

from accounts.models import ApiToken
from pulls.api.tokens import token_for

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5)


class BearerTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <token>``; a wrong, expired or revoked token: 401."""

    keyword = b"bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                "Write the header as: Authorization: Bearer <token>"
            )
        token = token_for(parts[1].decode("latin-1"))
        if token is None:
            raise exceptions.AuthenticationFailed(
                "This token is unknown, expired or revoked: make a new one on your account page."
            )
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
        return token.user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="pacsnpull"'


class TokenScope(BasePermission):
    """Logged in (token or session); a read-only token only reads."""

    message = "This token is read-only: make a read-write token to change anything."

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        token = request.auth
        if isinstance(token, ApiToken) and token.scope != ApiToken.WRITE:
            return request.method in SAFE_METHODS
        return True


class TokenRate(BaseThrottle):
    """PACSNPULL_API_RATE calls a minute per token (or per session user), counted
    in Redis so that every web process shares them; without Redis, not counted."""

    def allow_request(self, request, view) -> bool:
        # A token by its hash's start (never reused), a browser by its user.
        who = request.auth.digest[:16] if isinstance(request.auth, ApiToken) else None
        if who is None and not getattr(request.user, "is_authenticated", False):
            return True
        key_who = f"token:{who}" if who is not None else f"user:{request.user.pk}"
        now = time.time()
        window = int(now // 60)
        self._wait = 60 - (now % 60)
        key = f"pacsnpull:api:{key_who}:{window}"
        try:
            count, _ = _redis().pipeline().incr(key).expire(key, 120).execute()
        except redis.RedisError:
            log.warning("API rate not counted: Redis unreachable")
            return True
        return count <= settings.PACSNPULL_API_RATE

    def wait(self) -> float:
        return max(1.0, round(self._wait))


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The schema's word for the Bearer token (drf-spectacular)."""

    target_class = "pulls.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A personal API token."}
