"""Users and the operators group."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import Group, Permission
from django.db import transaction

from accounts.models import OPERATORS_GROUP, User

# What operators may do in the admin: manage nodes, limits, projects, members
# and users; look at jobs and the audit log (which nobody may change).
_OPERATOR_PERMISSIONS = {
    "pulls": {
        "pacsnode": ("add", "change", "delete", "view"),
        "project": ("add", "change", "view"),
        "membership": ("add", "change", "delete", "view"),
        "job": ("view",),
        "jobitem": ("view",),
        "findresult": ("view",),
        "auditevent": ("view",),
    },
    "accounts": {"user": ("add", "change", "view")},
    "auth": {"group": ("view",)},
    # Unlock a locked-out login: delete its access attempts.
    "axes": {"accessattempt": ("view", "delete")},
}


def operators_group_sync() -> Group:
    """Create the operators group if needed and give it exactly its permissions."""
    group, _ = Group.objects.get_or_create(name=OPERATORS_GROUP)
    perms = []
    for app_label, models in _OPERATOR_PERMISSIONS.items():
        for model, actions in models.items():
            codenames = [f"{action}_{model}" for action in actions]
            perms += list(
                Permission.objects.filter(content_type__app_label=app_label, codename__in=codenames)
            )
    group.permissions.set(perms)
    return group


@transaction.atomic
def operator_create(*, username: str, email: str = "") -> tuple[User, str]:
    """A staff user in the operators group, with a random password returned once."""
    password = secrets.token_urlsafe(12)
    user = User.objects.create_user(username=username, email=email, password=password)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.groups.add(operators_group_sync())
    return user, password
