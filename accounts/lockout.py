"""Login lockout (django-axes): the address it keys on, and the page it shows."""

from __future__ import annotations

from django.http import HttpRequest

from pulls.audit.events import client_ip as audit_client_ip


def client_ip(request: HttpRequest) -> str | None:
    """The same address the audit log records (REMOTE_ADDR, never a forged header).

    None when the server gave none (a login in a test client, a proxy on a Unix
    socket): axes then keys on the username alone. Not a placeholder word: on
    PostgreSQL the address column is ``inet`` and refuses it.
    """
    return audit_client_ip(request)
