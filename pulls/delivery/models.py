"""The records of delivery: series converted to NIfTI, and sendings to a
destination node with their studies (loaded with ``pulls.models``)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class NiftiSeries(models.Model):
    """A retrieved series converted to NIfTI by dcm2niix, or the reason it was not
    (a non-image object, a single-frame scout): listed, not failed."""

    project = models.ForeignKey(
        "pulls.Project", on_delete=models.CASCADE, related_name="nifti_series"
    )
    job = models.ForeignKey(
        "pulls.Job", on_delete=models.SET_NULL, null=True, blank=True, related_name="nifti_series"
    )
    series_instance_uid = models.CharField(max_length=64)
    folder = models.CharField(max_length=400, help_text="Relative to the project's folder.")
    files = models.TextField(blank=True, help_text="The NIfTI and JSON files written, one a line.")
    reason = models.CharField(max_length=300, blank=True, help_text="Why it was not converted.")
    converted_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "series_instance_uid"], name="nifti_once_per_project"
            )
        ]

    def __str__(self) -> str:
        return self.folder


class SendingStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class Sending(models.Model):
    """Files of a project (a job's, or all) sent to a destination node, study by study."""

    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey("pulls.Project", on_delete=models.PROTECT, related_name="sendings")
    job = models.ForeignKey(
        "pulls.Job", on_delete=models.PROTECT, null=True, blank=True, related_name="sendings"
    )
    destination = models.ForeignKey(
        "pulls.PacsNode", on_delete=models.PROTECT, related_name="sendings"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    status = models.CharField(
        max_length=10, choices=SendingStatus.choices, default=SendingStatus.QUEUED
    )
    waiting_reason = models.CharField(max_length=300, blank=True)
    # When a message last carried it: the reconciler queues it again long after.
    queued_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"sending {self.code} to {self.destination}"


class SentStudy(models.Model):
    """One study of a sending: its instances sent on one association, counted,
    and then counted again at the destination by C-FIND where it answers."""

    sending = models.ForeignKey(Sending, on_delete=models.CASCADE, related_name="studies")
    study_instance_uid = models.CharField(max_length=64)
    status = models.CharField(
        max_length=10, choices=SendingStatus.choices, default=SendingStatus.QUEUED
    )
    attempts = models.PositiveIntegerField(default=0)
    instances_expected = models.PositiveIntegerField(default=0)
    instances_sent = models.PositiveIntegerField(default=0)
    instances_failed = models.PositiveIntegerField(default=0)
    instances_converted = models.PositiveIntegerField(default=0)
    bytes_sent = models.PositiveBigIntegerField(default=0)
    # What the destination's C-FIND counts afterwards; None: not asked, or no answer.
    instances_at_destination = models.PositiveIntegerField(null=True, blank=True)
    message = models.TextField(blank=True)
    # Held by the worker sending it until then (a killed worker's study goes again).
    lease_until = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sending", "study_instance_uid"], name="study_once_per_sending"
            )
        ]

    def __str__(self) -> str:
        return self.study_instance_uid
