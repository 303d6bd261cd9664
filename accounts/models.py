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

    email_when_jobs_end = models.BooleanField(
        "e-mail me when my jobs end",
        default=True,
        help_text="Done, with failed rows, or cancelled: the counts and a link (no patient data).",
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


class ApiToken(models.Model):
    """A personal token for the REST API (pulls.api): shown once when made, kept
    as its SHA-256 only, with an expiry and a scope; revocable."""

    READ = "read"
    WRITE = "write"
    SCOPES = [(READ, "read-only"), (WRITE, "read-write")]

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, e.g. 'nightly pipeline'.")
    prefix = models.CharField(max_length=12, help_text="Its first characters, to tell it apart.")
    digest = models.CharField(max_length=64, unique=True)
    scope = models.CharField(max_length=5, choices=SCOPES, default=READ)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
