"""Records of PACS nodes, projects, jobs and the audit log.

The database is the source of truth for every job and item: Celery messages
only say "work on these item ids" and can be lost without losing work.
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from pulls.nodes.models import (  # noqa: F401  (re-exported: where they used to live)
    PacsNode,
    Protocol,
    QueryModel,
    RetrieveMethod,
    WebAddressField,
    WebAuth,
    ae_title_validator,
    return_keys_validator,
)


def absolute_path(value: str) -> None:
    if value and not Path(value).is_absolute():
        raise ValidationError("Give an absolute path, such as /srv/pacsnpull/lung-study.")


class Deidentification(models.TextChoices):
    PSEUDONYMISED = "pseudonymised", "Pseudonymised (DICOM PS3.15 Basic Profile)"
    IDENTIFIABLE = "identifiable", "Identifiable (files as the PACS holds them)"


def new_pseudonym_secret() -> str:
    """A project's key for its pseudonyms, UIDs and date shifts (256 bits, hex)."""
    return secrets.token_hex(32)


class Project(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(
        max_length=64, unique=True, help_text="Folder name of the project's storage."
    )
    description = models.TextField(blank=True)
    storage_path = models.CharField(
        max_length=500,
        blank=True,
        validators=[absolute_path],
        help_text="Absolute folder for this project's files; blank: the storage root / slug.",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="projects"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # What enters the project's folder (pulls.deid): chosen at creation, fixed
    # once files exist (Project.clean).
    deidentification = models.CharField(
        "de-identification",
        max_length=16,
        choices=Deidentification.choices,
        default=Deidentification.PSEUDONYMISED,
        help_text="Pseudonymised: every file is de-identified as it enters the project. "
        "Identifiable: files as the PACS holds them (the owner needs an operator's grant).",
    )
    retain_dates = models.BooleanField(
        "retain longitudinal temporal information with modified dates",
        default=True,
        help_text="Dates move back by a number of weeks of each patient's own: intervals "
        "between a patient's studies are kept. Off: dates are emptied.",
    )
    retain_patient_characteristics = models.BooleanField(
        default=False, help_text="Keep age, sex, size, weight, pregnancy and smoking status."
    )
    retain_device_identity = models.BooleanField(
        default=False, help_text="Keep station names, device serial numbers and device IDs."
    )
    retain_institution_identity = models.BooleanField(
        default=False, help_text="Keep the institution's name, address and department."
    )
    clean_descriptors = models.BooleanField(
        default=True,
        help_text="Keep study and series descriptions, protocol names and comments, cleaned "
        "of the patient's name, IDs and accession number. Off: they are removed.",
    )
    retain_safe_private = models.BooleanField(
        default=False,
        help_text="Keep the private attributes PS3.15 Table E.3.10-1 lists as safe; "
        "every other private attribute is removed in any case.",
    )
    keep_burned_in = models.BooleanField(
        "keep instances that may show burned-in text",
        default=False,
        help_text="Off: instances marked BurnedInAnnotation YES, or of kinds that usually "
        "show text (secondary captures, ultrasound, scanned documents, PDF) without a NO, "
        "go to quarantine. On: they are kept, flagged in the manifest.",
    )
    pseudonym_secret = models.CharField(max_length=64, default=new_pseudonym_secret, editable=False)
    # Notifications (pulls.notifications): a POST of each ended job's summary.
    webhook_url = WebAddressField(
        "webhook",
        blank=True,
        max_length=500,
        help_text="When a job of the project ends, its summary (counts and a link, no patient "
        "data) is POSTed here as JSON, signed with HMAC-SHA256 (X-Pacsnpull-Signature).",
    )
    webhook_secret = models.CharField(max_length=64, default=new_pseudonym_secret, editable=False)
    # Delivery (pulls.delivery): who downloads, what is converted, how long files stay.
    viewers_may_download = models.BooleanField(
        default=True,
        help_text="Viewers may download the project's files as ZIP (a download is a read). "
        "Off: owners and members only.",
    )
    nifti = models.BooleanField(
        "NIfTI beside DICOM",
        default=False,
        help_text="Convert each retrieved series with dcm2niix (with its JSON sidecar) into "
        "nifti/ in the project's folder, mirroring the DICOM layout.",
    )
    retention_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(36500)],
        help_text="Set by an operator: the files of finished jobs are deleted this many days "
        "after the job ended. Empty: kept until an owner deletes them.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    DEIDENTIFICATION_FIELDS = (
        "deidentification", "retain_dates", "retain_patient_characteristics",
        "retain_device_identity", "retain_institution_identity", "clean_descriptors",
        "retain_safe_private", "keep_burned_in",
    )  # fmt: skip
    DELIVERY_FIELDS = ("viewers_may_download", "nifti", "retention_days", "webhook_url")
    AUDITED_FIELDS = DEIDENTIFICATION_FIELDS + DELIVERY_FIELDS

    @property
    def is_pseudonymised(self) -> bool:
        return self.deidentification == Deidentification.PSEUDONYMISED

    def clean(self) -> None:
        if not self.pk:
            return
        before = Project.objects.filter(pk=self.pk).values(*self.DEIDENTIFICATION_FIELDS).first()
        changed = [
            f for f in self.DEIDENTIFICATION_FIELDS if before and before[f] != getattr(self, f)
        ]
        if changed and self.instances.exists():
            raise ValidationError(
                {
                    changed[0]: "This project holds files already: its de-identification "
                    "cannot change (the files would not match). Make a new project instead."
                }
            )

    @property
    def storage_dir(self):
        """The project's folder; the slug is a validated folder name."""
        if self.storage_path:
            return Path(self.storage_path)
        return settings.PACSNPULL_STORAGE_ROOT / self.slug


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_once_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} as {self.role}"

    @property
    def can_write(self) -> bool:
        return self.role in (Role.OWNER, Role.MEMBER)


class JobKind(models.TextChoices):
    FIND = "find", "Find (C-FIND)"
    MOVE = "move", "Retrieve (C-MOVE)"
    GET = "get", "Retrieve (C-GET)"


class JobStatus(models.TextChoices):
    DRAFT = "draft", "Draft (not started)"
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    CANCELLED = "cancelled", "Cancelled"
    DONE = "done", "Done"
    FAILED = "failed", "Done with failures"


ACTIVE_JOB_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)

# Celery queues: a dedicated worker serves the interactive one only.
QUEUE_INTERACTIVE = "interactive"
QUEUE_BULK = "bulk"


class Job(models.Model):
    code = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    kind = models.CharField(max_length=4, choices=JobKind.choices)
    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.DRAFT)
    title = models.CharField(max_length=200, blank=True)
    source_name = models.CharField(max_length=255, blank=True, help_text="Uploaded file name.")
    # A search of the Search page: a find job kept out of the job lists unless saved.
    is_search = models.BooleanField(default=False)
    # The job whose failed rows this one's file corrected (the failed-rows round trip).
    follows = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="followed_by"
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="jobs"
    )
    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="jobs")
    node = models.ForeignKey(PacsNode, on_delete=models.PROTECT, related_name="jobs")
    waiting_reason = models.CharField(max_length=300, blank=True)
    urgent = models.BooleanField(
        default=False, help_text="Set by an operator: runs on the interactive queue, first."
    )
    # Counters are recomputed from the items (job_refresh_counters), never incremented.
    items_total = models.PositiveIntegerField(default=0)
    items_pending = models.PositiveIntegerField(default=0)
    items_running = models.PositiveIntegerField(default=0)
    items_done = models.PositiveIntegerField(default=0)
    items_failed = models.PositiveIntegerField(default=0)
    items_cancelled = models.PositiveIntegerField(default=0)
    matches = models.PositiveIntegerField(default=0)
    instances_expected = models.PositiveIntegerField(default=0)
    instances_received = models.PositiveIntegerField(default=0)
    bytes_received = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When its files were deleted, and by whom (a username, or "retention").
    files_deleted_at = models.DateTimeField(null=True, blank=True)
    files_deleted_by = models.CharField(max_length=150, blank=True)
    # Where its files go when it has ended (a destination node), if anywhere.
    destination = models.ForeignKey(
        PacsNode, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # When its end was told (the owner's e-mail, the project's webhook).
    notified_at = models.DateTimeField(null=True, blank=True)
    # Its series' conversion to NIfTI (a project that asks for it): queued by the
    # reconciler once the job has ended, and done.
    nifti_queued_at = models.DateTimeField(null=True, blank=True)
    nifti_converted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # job_list_for_user / the dashboard: a project's jobs, newest first.
            models.Index(fields=["project", "-created_at"], name="job_project_recent"),
            # the reconciler: active jobs.
            models.Index(fields=["status"], name="job_status"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} job {self.code}"

    def get_kind_display(self) -> str:
        """What the job does, as its node does it (a DICOMweb node: QIDO-RS, WADO-RS)."""
        if self.node.is_dicomweb:
            return "Find (QIDO-RS)" if self.kind == JobKind.FIND else "Retrieve (WADO-RS)"
        return JobKind(self.kind).label

    @property
    def queue(self) -> str:
        """Small finds and urgent jobs go ahead of bulk work (DESIGN §6)."""
        if self.urgent or (
            self.kind == JobKind.FIND and self.items_total <= settings.PACSNPULL_INTERACTIVE_ROWS
        ):
            return QUEUE_INTERACTIVE
        return QUEUE_BULK


class ItemStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINAL_ITEM_STATUSES = (ItemStatus.DONE, ItemStatus.FAILED, ItemStatus.CANCELLED)


# See JobItem.Meta.indexes.
_JOB_STATUS_ROW_SUMS = [
    "job", "status", "row", "matches", "instances_expected", "instances_received",
    "bytes_received",
]  # fmt: skip


class JobItem(models.Model):
    """One query row of a job: what to ask the PACS, and what came of it."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="items")
    row = models.PositiveIntegerField(help_text="Row number in the uploaded file, from 1.")
    identifier = models.JSONField(help_text="Query keys by DICOM keyword.")
    status = models.CharField(max_length=10, choices=ItemStatus.choices, default=ItemStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    # A claimed item belongs to one worker until the lease expires.
    lease_token = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True, help_text="Retry no earlier.")
    error_code = models.PositiveIntegerField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    matches = models.PositiveIntegerField(default=0)
    possibly_truncated = models.BooleanField(
        default=False, help_text="As many matches as the node's result cap: some may be missing."
    )
    instances_expected = models.PositiveIntegerField(default=0)
    sop_classes = models.TextField(
        blank=True,
        help_text=(
            "SOP Class UIDs of the study, '\\'-separated, as the PACS counted them "
            "(SOPClassesInStudy): what a C-GET proposes. Empty: not known."
        ),
    )
    instances_received = models.PositiveIntegerField(default=0)
    instances_failed = models.PositiveIntegerField(default=0)
    bytes_received = models.PositiveBigIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "row"]
        constraints = [
            models.UniqueConstraint(fields=["job", "row"], name="jobitem_row_once_per_job")
        ]
        indexes = [
            # A job's rows of one status in row order (the job page's filter);
            # with the summed columns, job_refresh_counters reads this index
            # alone (half the time of reading the rows).
            models.Index(fields=_JOB_STATUS_ROW_SUMS, name="jobitem_job_status_row"),
            # The look for a job's next queued rows (items_claim_next, with
            # the status written out): the pending rows alone, in row order.
            # Without it, SQLite (no statistics) and PostgreSQL (statistics of
            # a moment before, when most of the job was pending) walked the
            # job's rows in row order past every one done: 20-30 ms a claim
            # late in a 100,000-row job (bench/bookkeeping.py).
            models.Index(
                fields=["job", "row"],
                condition=models.Q(status=ItemStatus.PENDING),
                name="jobitem_pending",
            ),
            # items_reconcile: running items whose lease expired.
            models.Index(fields=["status", "lease_expires_at"], name="jobitem_lease"),
            # items_claim: the items a lease token holds.
            models.Index(fields=["lease_token"], name="jobitem_lease_token"),
        ]

    def __str__(self) -> str:
        return f"row {self.row} of {self.job_id}"


class FindResult(models.Model):
    """One C-FIND match: all returned attributes, plus the keys people filter on."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="find_results")
    item = models.ForeignKey(JobItem, on_delete=models.CASCADE, related_name="find_results")
    attributes = models.JSONField(help_text="Returned attributes by DICOM keyword.")
    patient_id = models.CharField(max_length=64, blank=True)
    study_instance_uid = models.CharField(max_length=64, blank=True)
    series_instance_uid = models.CharField(max_length=64, blank=True)
    accession_number = models.CharField(max_length=64, blank=True)
    study_date = models.DateField(null=True, blank=True)
    modality = models.CharField(max_length=64, blank=True)
    # The description filter reads these columns, not the JSON: a scan of a
    # 100,000-match job's descriptions stays within the job page's budget.
    study_description = models.CharField(max_length=256, blank=True)
    series_description = models.CharField(max_length=256, blank=True)

    class Meta:
        ordering = ["job", "id"]
        indexes = [
            # "retrieve these": a job's distinct studies / series.
            models.Index(fields=["job", "study_instance_uid"], name="findresult_study"),
            models.Index(fields=["job", "series_instance_uid"], name="findresult_series"),
            # job page filters and sort.
            models.Index(fields=["job", "patient_id"], name="findresult_patient"),
            models.Index(fields=["job", "accession_number"], name="findresult_accession"),
            models.Index(fields=["job", "study_date"], name="findresult_date"),
            models.Index(fields=["job", "modality"], name="findresult_modality"),
            # the default order, in row order (selectors.MATCH_SORTS).
            models.Index(fields=["job", "item"], name="findresult_row"),
            # the description filter reads the index, not the wide rows.
            models.Index(
                fields=["job", "study_description", "series_description"],
                name="findresult_description",
            ),
        ]

    def __str__(self) -> str:
        return f"match {self.pk} of job {self.job_id}"

    @property
    def instance_count(self) -> str:
        """Instances of the series (or study) as the PACS counted them, or ""."""
        attributes = self.attributes
        return str(
            attributes.get("NumberOfSeriesRelatedInstances")
            or attributes.get("NumberOfStudyRelatedInstances")
            or ""
        )


class RetrievedInstance(models.Model):
    """An instance on disk in a project's storage: each one exactly once.

    The manifest of a retrieval job is the set of these for its items' studies
    (or series); an item whose instances are all here already is skipped.
    """

    project = models.ForeignKey(Project, on_delete=models.PROTECT, related_name="instances")
    path = models.CharField(max_length=400, help_text="Relative to the project's folder.")
    patient_id = models.CharField(max_length=64, blank=True)
    study_instance_uid = models.CharField(max_length=64)
    series_instance_uid = models.CharField(max_length=64)
    sop_instance_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    sop_class_uid = models.CharField(max_length=64, blank=True)
    # As it arrived and as its file meta names it (nothing converts it).
    transfer_syntax = models.CharField(max_length=64, blank=True)
    # Why it may show burned-in text, where the project keeps such instances.
    burned_in = models.CharField(max_length=200, blank=True)
    placed_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "sop_instance_uid"], name="instance_once_per_project"
            )
        ]
        indexes = [
            # manifests and the "already complete" check: a project's study or series.
            models.Index(fields=["project", "study_instance_uid"], name="instance_study"),
            models.Index(fields=["project", "series_instance_uid"], name="instance_series"),
        ]

    def __str__(self) -> str:
        return self.path


class PseudonymPatient(models.Model):
    """A patient of a pseudonymised project: the original PatientID, its
    pseudonym (derived from the project's key, or given by a query file) and
    the patient's date shift. Owners alone see these (pulls.deid.mapping)."""

    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="pseudonym_patients"
    )
    patient_id = models.CharField(max_length=64)
    pseudonym = models.CharField(max_length=64)
    given = models.BooleanField(default=False, help_text="Given by a query file's Pseudonym.")
    date_shift_days = models.IntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "patient_id"], name="pseudonym_patient"),
            models.UniqueConstraint(fields=["project", "pseudonym"], name="pseudonym_unique"),
        ]
        ordering = ["project", "pseudonym"]

    def __str__(self) -> str:
        return f"pseudonym {self.pseudonym} in {self.project}"


class PseudonymStudy(models.Model):
    """A study of a pseudonymised project: original and pseudonymised Study
    Instance UID and accession number."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="pseudonym_studies")
    patient_id = models.CharField(max_length=64)
    study_instance_uid = models.CharField(max_length=64)
    pseudonym_study_uid = models.CharField(max_length=64)
    accession_number = models.CharField(max_length=64, blank=True)
    pseudonym_accession = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "study_instance_uid"], name="pseudonym_study"
            )
        ]
        ordering = ["project", "patient_id", "study_instance_uid"]

    def __str__(self) -> str:
        return f"study {self.pseudonym_study_uid} in {self.project}"


# Models of their own sub-packages, kept with what they serve and loaded with
# this module (Django finds an app's models here): the audit log, files
# delivered and sent, and the webhook deliveries of notifications (the nodes'
# are imported at the top: the models above refer to them).
from pulls.audit.models import (  # noqa: E402, F401
    AuditAction,
    AuditEvent,
    AuditEventIsAppendOnly,
    AuditEventQuerySet,
)
from pulls.delivery.models import NiftiSeries, Sending, SendingStatus, SentStudy  # noqa: E402, F401
from pulls.notifications.models import WebhookDelivery  # noqa: E402, F401
