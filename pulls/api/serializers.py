"""What the API's calls take and answer. Status names are the pages' values in
lower case (draft, queued, running, paused, done, failed, cancelled)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination

from pulls.jobs.progress import job_progress
from pulls.models import FindResult, Job, JobItem, JobKind, PacsNode, Project


class Pages(PageNumberPagination):
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class NodeSerializer(serializers.ModelSerializer):
    class Meta:
        model = PacsNode
        fields = [
            "code", "name", "protocol", "ae_title", "host", "port", "base_url", "query_model",
            "retrieve_method", "is_destination", "suspended", "max_associations",
            "queries_per_minute", "retrievals_per_hour", "allowed_windows", "last_echo_at",
            "last_echo_ok",
        ]  # fmt: skip


class ProjectSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField()

    class Meta:
        model = Project
        fields = ["code", "name", "slug", "description", "deidentification", "nifti", "role"]

    def get_role(self, project: Project) -> str | None:
        return self.context["roles"].get(project.pk)


class CountsSerializer(serializers.Serializer):
    rows = serializers.IntegerField(source="items_total")
    pending = serializers.IntegerField(source="items_pending")
    running = serializers.IntegerField(source="items_running")
    done = serializers.IntegerField(source="items_done")
    failed = serializers.IntegerField(source="items_failed")
    cancelled = serializers.IntegerField(source="items_cancelled")
    matches = serializers.IntegerField()
    instances = serializers.IntegerField(source="instances_received")
    instances_expected = serializers.IntegerField()
    bytes = serializers.IntegerField(source="bytes_received")


class ProgressSerializer(serializers.Serializer):
    """How far a job is and how fast it goes (as the job page says it)."""

    state = serializers.CharField(help_text="As the page shows it, e.g. 'Running', 'Waiting'.")
    percent_done = serializers.IntegerField()
    percent_failed = serializers.IntegerField()
    rows_per_second = serializers.FloatField(allow_null=True)
    instances_per_second = serializers.FloatField(allow_null=True)
    megabytes_per_second = serializers.FloatField(allow_null=True)
    eta_seconds = serializers.IntegerField(allow_null=True)


class JobSerializer(serializers.ModelSerializer):
    project = serializers.UUIDField(source="project.code")
    node = serializers.UUIDField(source="node.code")
    owner = serializers.CharField(source="owner.username")
    counts = CountsSerializer(source="*")
    # The counts scripts read at the top level too (kept stable).
    rows = serializers.IntegerField(source="items_total")
    failed = serializers.IntegerField(source="items_failed")
    instances = serializers.IntegerField(source="instances_received")
    destination = serializers.UUIDField(source="destination.code", allow_null=True, default=None)

    class Meta:
        model = Job
        fields = [
            "code", "kind", "status", "title", "project", "node", "owner", "urgent",
            "waiting_reason", "rows", "failed", "matches", "instances", "counts", "destination",
            "created_at", "started_at", "finished_at", "files_deleted_at",
        ]  # fmt: skip


class JobCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=JobKind.choices)
    project = serializers.UUIDField(help_text="The project's code (GET /api/v1/projects/).")
    node = serializers.UUIDField(help_text="The node's code (GET /api/v1/nodes/).")
    rows = serializers.ListField(
        child=serializers.DictField(child=serializers.CharField(allow_blank=True)),
        required=False,
        help_text="Query rows by DICOM keyword, as a query file's: "
        '[{"QueryRetrieveLevel": "STUDY", "PatientID": "123", "StudyInstanceUID": ""}]',
    )
    file = serializers.FileField(
        required=False, help_text="Or a query file (JSON, CSV, XLSX), as multipart."
    )
    title = serializers.CharField(required=False, allow_blank=True, max_length=200, default="")
    start = serializers.BooleanField(required=False, default=False)
    destination = serializers.UUIDField(
        required=False, allow_null=True, default=None,
        help_text="Retrievals: a destination node's code; the files go there when the job ends.",
    )  # fmt: skip
    default_level = serializers.ChoiceField(
        choices=["", "PATIENT", "STUDY", "SERIES", "IMAGE"], required=False, default=""
    )


class RetrieveSerializer(serializers.Serializer):
    method = serializers.ChoiceField(choices=["move", "get"])
    level = serializers.ChoiceField(choices=["STUDY", "SERIES"], default="STUDY")
    modality = serializers.CharField(required=False, allow_blank=True, max_length=16, default="")
    description = serializers.CharField(required=False, allow_blank=True, max_length=64, default="")
    date_from = serializers.DateField(required=False, allow_null=True, default=None)
    date_to = serializers.DateField(required=False, allow_null=True, default=None)


class RowSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobItem
        fields = [
            "row", "identifier", "status", "attempts", "matches", "possibly_truncated",
            "instances_expected", "instances_received", "bytes_received", "duration_ms",
            "error_code", "error_message", "started_at", "finished_at",
        ]  # fmt: skip


class MatchSerializer(serializers.ModelSerializer):
    row = serializers.IntegerField(source="item.row")

    class Meta:
        model = FindResult
        fields = ["row", "attributes", "patient_id", "study_instance_uid", "series_instance_uid",
                  "accession_number", "study_date", "modality"]  # fmt: skip


class ProblemSerializer(serializers.Serializer):
    row = serializers.IntegerField(allow_null=True, help_text="1 = the first row; null: the file")
    key = serializers.CharField(allow_blank=True)
    message = serializers.CharField(help_text="What is wrong and how to fix it.")


class ProblemsSerializer(serializers.Serializer):
    detail = serializers.CharField()
    problems = ProblemSerializer(many=True)


class JobDetailSerializer(JobSerializer):
    progress = serializers.SerializerMethodField()

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "progress"]

    @extend_schema_field(ProgressSerializer)
    def get_progress(self, job: Job) -> dict:
        shown = job_progress(job)
        return ProgressSerializer(shown).data
