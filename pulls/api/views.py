"""The API's calls: each one the pages' services, selectors, access checks and
audit events, answering JSON (files as the pages stream them).

An object a caller may not see is a 404, as on the pages; one they may see
but not change is a 403; bad input is a 400 naming the row, key and fix.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import ValidationError as ApiValidationError
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from pulls import selectors, services
from pulls.api import serializers as s
from pulls.audit.events import audit_record
from pulls.deid.mapping import COLUMNS as MAPPING_COLUMNS
from pulls.deid.mapping import mapping_rows
from pulls.deid.projects import shown_for
from pulls.delivery.selection import job_selection
from pulls.delivery.sending import destinations_for
from pulls.jobs import exports
from pulls.models import AuditAction, JobKind, Project, Role
from pulls.queries.files import ParsedQueries, parse_query_file
from pulls.queries.readers import Problem
from pulls.queries.retrievals import retrieval_problems
from pulls.retrieval import manifests
from pulls.web.delivery import may_download, zip_response
from pulls.web.shown import shown_item, shown_match
from pulls.web.views import MatchFilterForm

PROBLEMS_SHOWN = 200
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def _problems(problems: list[Problem], what: str) -> Response:
    """400: what is wrong, each problem with its row and key, nothing saved."""
    listed = [{"row": p.row, "key": p.key, "message": p.message} for p in problems]
    return Response(
        {"detail": f"{what}: nothing was saved. Fix these and send again.",
         "problems": listed[:PROBLEMS_SHOWN]},
        status=status.HTTP_400_BAD_REQUEST,
    )  # fmt: skip


def _refused(exc: ValidationError | PermissionDenied) -> Response:
    if isinstance(exc, PermissionDenied):
        return Response({"detail": str(exc) or "Not allowed."}, status=status.HTTP_403_FORBIDDEN)
    return Response({"detail": " ".join(exc.messages)}, status=status.HTTP_400_BAD_REQUEST)


def _job(request: Request, code: str):
    return selectors.job_get_for_user(user=request.user, code=code)


# --- nodes and projects ------------------------------------------------------------


@extend_schema(responses=s.NodeSerializer(many=True), summary="The nodes granted to me")
@api_view(["GET"])
def node_list(request: Request) -> Response:
    nodes = selectors.node_list_for_user(user=request.user).filter(is_active=True)
    return Response(s.NodeSerializer(nodes, many=True).data)


@extend_schema(request=None, responses={200: OpenApiTypes.OBJECT}, summary="C-ECHO a node")
@api_view(["POST"])
def node_echo(request: Request, code: str) -> Response:
    node = selectors.node_get_for_user(user=request.user, code=code)
    message = services.node_echo(node=node, user=request.user, request=request._request)
    return Response({"ok": bool(node.last_echo_ok), "message": message})


@extend_schema(responses=s.ProjectSerializer(many=True), summary="My projects")
@api_view(["GET"])
def project_list(request: Request) -> Response:
    projects = selectors.project_list_for_user(user=request.user).order_by("name")
    roles = dict(request.user.memberships.values_list("project_id", "role"))  # one query
    if request.user.is_operator:  # operators act as owners everywhere
        roles = {p.pk: Role.OWNER for p in projects}
    return Response(s.ProjectSerializer(projects, many=True, context={"roles": roles}).data)


def _project(request: Request, code: str) -> Project:
    project = selectors.project_list_for_user(user=request.user).filter(code=code).first()
    if project is None:
        raise Http404("No such project.")
    return project


@extend_schema(
    responses={200: OpenApiTypes.OBJECT},
    summary="The pseudonym mapping of a pseudonymised project (its owners alone)",
)
@api_view(["GET"])
def project_mapping(request: Request, code: str) -> Response:
    project = _project(request, code)
    if not project.is_pseudonymised:
        raise Http404("This project keeps no pseudonyms.")
    if selectors.membership_role(user=request.user, project=project) != Role.OWNER:
        audit_record(
            action=AuditAction.MAPPING, actor=request.user, request=request._request,
            project=project, success=False, target=f"pseudonym mapping of {project.name}",
            message="refused: only the project's owners see its mapping",
        )  # fmt: skip
        raise PermissionDenied("Only the project's owners see its pseudonym mapping.")
    audit_record(
        action=AuditAction.MAPPING, actor=request.user, request=request._request,
        project=project, target=f"pseudonym mapping of {project.name}",
        details={"viewed": "api"},
    )  # fmt: skip
    rows = [dict(zip(MAPPING_COLUMNS, row, strict=False)) for row in mapping_rows(project)]
    return Response({"columns": MAPPING_COLUMNS, "rows": rows})


# --- jobs ------------------------------------------------------------------------------


def _parse(data: dict, node) -> tuple[ParsedQueries, str] | Response:
    """The rows (JSON) or the uploaded file, through the pages' parser and checks."""
    upload, rows = data.get("file"), data.get("rows")
    if (upload is None) == (rows is None):
        return Response(
            {"detail": "Send either rows (a list of {keyword: value}) or a file, not both."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    charset = {"character_set": node.character_set}
    limits = {"max_rows": settings.PACSNPULL_QUERY_MAX_ROWS,
              "max_bytes": settings.PACSNPULL_QUERY_MAX_BYTES}  # fmt: skip
    level = data.get("default_level", "")
    if upload is not None:
        if upload.size > settings.PACSNPULL_QUERY_MAX_BYTES:
            return _problems(
                [Problem(None, "file", "is larger than the limit: split it")], upload.name
            )
        return parse_query_file(
            upload.read(), name=upload.name, default_level=level, **limits, **charset
        ), upload.name
    raw = json.dumps(rows).encode()
    return parse_query_file(raw, name="rows.json", default_level=level, **limits, **charset), "rows"


@extend_schema(
    methods=["POST"],
    request={
        "application/json": s.JobCreateSerializer,
        "multipart/form-data": s.JobCreateSerializer,
    },
    responses={201: s.JobSerializer, 400: s.ProblemsSerializer},
    summary="Make a job from rows or a query file (a draft unless start is true)",
)
@extend_schema(methods=["GET"], responses=s.JobSerializer(many=True), summary="My jobs")
@api_view(["GET", "POST"])
@parser_classes([JSONParser, MultiPartParser, FormParser])
def job_list(request: Request) -> Response:
    if request.method == "GET":
        jobs = (
            selectors.job_list_for_user(user=request.user)
            .filter(is_search=False)
            .select_related("destination")
        )
        page = s.Pages()
        items = page.paginate_queryset(jobs, request)
        return page.get_paginated_response(s.JobSerializer(items, many=True).data)
    given = s.JobCreateSerializer(data=request.data)
    if not given.is_valid():
        problems = [
            Problem(
                None, key, " ".join(map(str, errors)) if isinstance(errors, list) else str(errors)
            )
            for key, errors in given.errors.items()
        ]
        return _problems(problems, "The request")
    data = given.validated_data
    project = (
        selectors.project_list_for_user(user=request.user).filter(code=data["project"]).first()
    )
    node = (
        selectors.node_list_for_user(user=request.user)
        .filter(code=data["node"], is_active=True)
        .first()
    )
    if project is None or node is None:
        missing = "project" if project is None else "node"
        return Response(
            {"detail": f"No {missing} with that code is yours: see GET /api/v1/{missing}s/."},
            status=status.HTTP_400_BAD_REQUEST,
        )
    destination = None
    if data.get("destination"):
        destination = destinations_for(request.user).filter(code=data["destination"]).first()
        if destination is None:
            return Response(
                {"detail": "No destination with that code is yours to send to."},
                status=status.HTTP_400_BAD_REQUEST,
            )
    parsed = _parse(data, node)
    if isinstance(parsed, Response):
        return parsed
    parsed, name = parsed
    if not parsed.ok:
        return _problems(parsed.problems, name)
    if data["kind"] in ("move", "get"):
        problems = retrieval_problems(
            parsed.rows, parsed.numbers, patient_root=node.query_model == "P"
        )
        if problems:
            return _problems(problems, name)
    try:
        job = services.job_create(
            kind=JobKind(data["kind"]), owner=request.user, project=project, node=node,
            rows=parsed.rows, row_numbers=parsed.numbers, title=data["title"],
            source_name=getattr(data.get("file"), "name", "") or "api", request=request._request,
            destination=destination,
        )  # fmt: skip
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    answer = {}
    if data["start"]:
        try:
            services.job_start(job=job, user=request.user, request=request._request)
        except (ValidationError, PermissionDenied) as exc:
            # Saved, not started (e.g. too little free space): the draft, and why.
            answer["not_started"] = " ".join(getattr(exc, "messages", None) or [str(exc)])
    job.refresh_from_db()
    return Response({**s.JobSerializer(job).data, **answer}, status=status.HTTP_201_CREATED)


@extend_schema(responses=s.JobDetailSerializer, summary="A job: its status, counts and progress")
@api_view(["GET"])
def job_detail(request: Request, code: str) -> Response:
    return Response(s.JobDetailSerializer(_job(request, code)).data)


ACTIONS = {
    "start": services.job_start,
    "pause": services.job_pause,
    "resume": services.job_resume,
    "cancel": services.job_cancel,
    "retry": services.job_retry_failed,
    "urgent": services.job_mark_urgent,
}


@extend_schema(
    operation_id="jobs_action",
    request=None,
    responses={200: s.JobSerializer, 400: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT},
    summary="start, pause, resume, cancel, retry (the failed rows) or urgent (operators)",
)
@api_view(["POST"])
def job_action(request: Request, code: str, action: str) -> Response:
    job = _job(request, code)
    if action not in ACTIONS:
        raise Http404("No such action.")
    try:
        ACTIONS[action](job=job, user=request.user, request=request._request)
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    job.refresh_from_db()
    return Response(s.JobSerializer(job).data)


@extend_schema(
    parameters=[
        OpenApiParameter("status", str, description="pending, running, done, failed, cancelled")
    ],
    responses=s.RowSerializer(many=True),
    summary="A job's rows, with each one's status and error",
)
@api_view(["GET"])
def job_rows(request: Request, code: str) -> Response:
    job = _job(request, code)
    page = s.Pages()
    items = page.paginate_queryset(
        selectors.job_items(job=job, status=request.query_params.get("status", "")), request
    )
    shown = shown_for(project=job.project, user=request.user)
    if shown is not None:
        items = [shown_item(shown, item) for item in items]
    return page.get_paginated_response(s.RowSerializer(items, many=True).data)


@extend_schema(
    parameters=[
        OpenApiParameter("modality", str),
        OpenApiParameter("description", str),
        OpenApiParameter("date_from", OpenApiTypes.DATE),
        OpenApiParameter("date_to", OpenApiTypes.DATE),
        OpenApiParameter("sort", str, enum=list(selectors.MATCH_SORTS)),
    ],  # fmt: skip
    responses=s.MatchSerializer(many=True),
    summary="A find job's matches, with the page's filters",
)
@api_view(["GET"])
def job_matches(request: Request, code: str) -> Response:
    job = _job(request, code)
    filters = MatchFilterForm(request.query_params or None)
    if request.query_params and not filters.is_valid():
        raise ApiValidationError(filters.errors)
    wanted = {k: v for k, v in (filters.cleaned_data if filters.is_bound else {}).items() if v}
    page = s.Pages()
    matches = page.paginate_queryset(selectors.job_matches(job=job, **wanted), request)
    shown = shown_for(project=job.project, user=request.user)
    if shown is not None:
        matches = [shown_match(shown, m) for m in matches]
        data = [{"row": m.item.row, "attributes": m.attributes, "patient_id": m.patient_id,
                 "study_instance_uid": m.study_instance_uid, "series_instance_uid": "",
                 "accession_number": m.accession_number, "study_date": m.study_date,
                 "modality": m.modality} for m in matches]  # fmt: skip
        return page.get_paginated_response(data)
    return page.get_paginated_response(s.MatchSerializer(matches, many=True).data)


@extend_schema(
    request=s.RetrieveSerializer,
    responses={201: s.JobSerializer},
    summary="Retrieve these: a retrieval job of a find job's matches (a draft)",
)
@api_view(["POST"])
def job_retrieve(request: Request, code: str) -> Response:
    find = _job(request, code)
    given = s.RetrieveSerializer(data=request.data)
    given.is_valid(raise_exception=True)
    try:
        job = services.retrieval_create_from_find(
            find_job=find, user=request.user, request=request._request, **given.validated_data
        )
    except (ValidationError, PermissionDenied) as exc:
        return _refused(exc)
    return Response(s.JobSerializer(job).data, status=status.HTTP_201_CREATED)


def _attachment(response, name: str):
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@extend_schema(
    parameters=[
        OpenApiParameter("format", str, enum=["csv", "xlsx"], location=OpenApiParameter.PATH)
    ],
    responses={(200, "text/csv"): OpenApiTypes.BINARY},
    summary="A find job's matches as CSV or XLSX (as the page exports them)",
)
@api_view(["GET"])
def job_export(request: Request, code: str, fmt: str) -> HttpResponse:
    job = _job(request, code)
    audit_record(
        action=AuditAction.EXPORT, request=request._request, job=job, target=f"matches.{fmt}",
        details={"format": fmt, "matches": job.matches, "rows": job.items_total, "via": "api"},
    )  # fmt: skip
    shown = shown_for(project=job.project, user=request.user)
    if fmt == "xlsx":
        response = HttpResponse(exports.xlsx_bytes(job, shown), content_type=XLSX)
    else:
        response = StreamingHttpResponse(exports.csv_chunks(job, shown), content_type="text/csv")
    return _attachment(response, f"pacsnpull-{job.code}-matches.{fmt}")


@extend_schema(
    responses={(200, "text/csv"): OpenApiTypes.BINARY}, summary="A retrieval job's manifest"
)
@api_view(["GET"])
def job_manifest(request: Request, code: str) -> StreamingHttpResponse:
    job = _job(request, code)
    audit_record(
        action=AuditAction.EXPORT, request=request._request, job=job, target="manifest.csv",
        details={"instances": job.instances_received, "via": "api"},
    )  # fmt: skip
    response = StreamingHttpResponse(manifests.manifest_chunks(job), content_type="text/csv")
    return _attachment(response, f"pacsnpull-{job.code}-manifest.csv")


@extend_schema(
    parameters=[OpenApiParameter("row", int, many=True, description="only these rows' studies")],
    responses={(200, "application/zip"): OpenApiTypes.BINARY, 404: OpenApiTypes.OBJECT},
    summary="A retrieval job's files as a streamed ZIP",
)
@api_view(["GET"])
def job_files_zip(request: Request, code: str):
    job = _job(request, code)
    role = selectors.project_role_for(user=request.user, project=job.project)
    if not may_download(role, job.project):
        raise PermissionDenied("This project's owners let only owners and members download files.")
    try:
        rows = [int(v) for v in request.query_params.getlist("row")]
    except ValueError:
        rows = [0]
    if any(not 0 < r < 2**31 for r in rows):
        return Response({"detail": "row must be a row number."}, status=status.HTTP_400_BAD_REQUEST)
    if job.kind == JobKind.FIND and not rows:
        return Response({"detail": "A find job has no files of its own: name rows."},
                        status=status.HTTP_400_BAD_REQUEST)  # fmt: skip
    instances = job_selection(job, rows=rows)
    if not instances.exists():
        return Response({"detail": "The project holds no files of this job (or of these rows)."},
                        status=status.HTTP_404_NOT_FOUND)  # fmt: skip
    return zip_response(
        request._request, project=job.project, instances=instances, job=job, rows=rows,
        folder=f"pacsnpull-{job.project.slug}-{str(job.code)[:8]}",
        scope=f"files of rows {', '.join(map(str, rows[:20]))}" if rows else "files of the job",
    )  # fmt: skip
