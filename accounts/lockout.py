"""Login lockout (django-axes): the address it keys on, and the page it shows."""

from __future__ import annotations

from django.http import HttpRequest

from pulls.audit import client_ip as audit_client_ip


def client_ip(request: HttpRequest) -> str:
    """The same address the audit log records (REMOTE_ADDR, never a forged header)."""
    return audit_client_ip(request) or "unknown"
