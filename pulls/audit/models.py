"""The audit log's events: append-only (the model, its queryset and database
triggers refuse every change and delete). Loaded and re-exported by
``pulls.models``; written through ``pulls.audit.events``."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditAction(models.TextChoices):
    LOGIN = "login", "Login"
    LOGIN_FAILED = "login_failed", "Failed login"
    LOGOUT = "logout", "Logout"
    ECHO = "echo", "C-ECHO (or QIDO-RS check)"
    FIND = "find", "C-FIND or QIDO-RS"
    MOVE = "move", "C-MOVE"
    GET = "get", "C-GET or WADO-RS"
    JOB_CREATED = "job_created", "Job created"
    JOB_CANCELLED = "job_cancelled", "Job cancelled"
    JOB_RETRIED = "job_retried", "Job retried"
    JOB_PAUSED = "job_paused", "Job paused"
    JOB_RESUMED = "job_resumed", "Job resumed"
    EXPORT = "export", "Export or download"
    NODE_CHANGED = "node_changed", "Node changed"
    PERMISSION_CHANGED = "permission_changed", "Permission changed"
    JOB_URGENT = "job_urgent", "Job marked urgent"
    QUARANTINE = "quarantine", "Instance quarantined"
    MAPPING = "mapping", "Pseudonym mapping viewed or downloaded"
    PROJECT_CHANGED = "project_changed", "Project created or changed"
    DEIDENTIFY = "deidentify", "Files pseudonymised on the command line"
    DOWNLOAD = "download", "Files downloaded (ZIP)"
    SEND = "send", "Files sent (C-STORE or STOW-RS)"
    TOKEN = "token", "API token made or revoked"
    NOTIFY = "notify", "Job end told (e-mail, webhook)"
    FILES_DELETED = "files_deleted", "Files deleted"


class AuditEventIsAppendOnly(Exception):
    """Raised on any attempt to change or delete an audit event."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditEventIsAppendOnly("Audit events cannot be changed.")

    def delete(self):
        raise AuditEventIsAppendOnly("Audit events cannot be deleted.")

    # bulk_update goes through update(); _raw_delete bypasses delete().
    def _raw_delete(self, using):
        raise AuditEventIsAppendOnly("Audit events cannot be deleted.")


class AuditEvent(models.Model):
    """Who did what to which patient data, from where, and what came of it.

    Append-only: the model, its queryset and database triggers (migration 0002)
    refuse every change and delete.
    """

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,  # users are deactivated, never deleted, once audited
        null=True,
        blank=True,
        related_name="+",
    )
    actor_label = models.CharField(
        max_length=150, help_text="Username at the time, or 'system' for workers and beat."
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    action = models.CharField(max_length=24, choices=AuditAction.choices)
    success = models.BooleanField(default=True)
    node = models.ForeignKey(
        "pulls.PacsNode", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    project = models.ForeignKey(
        "pulls.Project", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    job = models.ForeignKey(
        "pulls.Job", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    target = models.CharField(max_length=300, blank=True, help_text="What it was done on.")
    details = models.JSONField(default=dict, blank=True, help_text="Query keys, counts, status.")
    message = models.TextField(blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            # audit page filters: by action and by project, newest first.
            models.Index(fields=["action", "-at"], name="audit_action_recent"),
            models.Index(fields=["project", "-at"], name="audit_project_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditEventIsAppendOnly("Audit events cannot be changed.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditEventIsAppendOnly("Audit events cannot be deleted.")
