"""The webhook deliveries of notifications (loaded with ``pulls.models``)."""

from __future__ import annotations

from django.db import models


class WebhookDelivery(models.Model):
    """One POST of a job's summary to its project's webhook, tried until it is
    answered 2xx or its tries are used; its owners see the failures."""

    PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
    STATUSES = [(PENDING, "Pending"), (DELIVERED, "Delivered"), (FAILED, "Failed")]

    project = models.ForeignKey("pulls.Project", on_delete=models.CASCADE, related_name="webhooks")
    job = models.ForeignKey("pulls.Job", on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=500)
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    response_code = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When its next try is due: long past, its message was lost (queued again).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"webhook of {self.job} ({self.status})"
