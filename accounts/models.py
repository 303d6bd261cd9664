from django.contrib.auth.models import AbstractUser
from django.db import models

# Operators manage PACS nodes, limits and users and see the whole audit log.
OPERATORS_GROUP = "operators"


class User(AbstractUser):
    """The portal's user; custom from the first migration so it can grow."""

    may_pull_identifiable = models.BooleanField(
        "may pull identifiable data",
        default=False,
        help_text="Granted by an operator: this user may own projects that keep files as "
        "the PACS holds them, with names and IDs (every other project is pseudonymised).",
    )

    class Meta:
        db_table = "accounts_user"

    @property
    def is_operator(self) -> bool:
        if self.is_superuser:
            return True
        if not self.is_staff:
            return False
        return self.groups.filter(name=OPERATORS_GROUP).exists()
