"""/api/v1/: the calls, the OpenAPI schema and the browsable root."""

from django.urls import path, re_path
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.decorators import api_view
from rest_framework.response import Response
from rest_framework.reverse import reverse

from pulls.api import views

CODE = r"(?P<code>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"


@extend_schema(exclude=True)
@api_view(["GET"])
def api_root(request, format=None):
    """pacsnpull's REST API: the nodes granted to you, your projects and jobs.
    Scripts send `Authorization: Bearer <token>` (make one on your account page);
    the schema is at /api/v1/schema/; docs/api.md shows a whole session."""
    return Response(
        {
            "nodes": reverse("api_nodes", request=request),
            "projects": reverse("api_projects", request=request),
            "jobs": reverse("api_jobs", request=request),
            "schema": reverse("api_schema", request=request),
        }
    )


urlpatterns = [
    path("", api_root, name="api_root"),
    path("schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("nodes/", views.node_list, name="api_nodes"),
    path("nodes/<uuid:code>/echo/", views.node_echo, name="api_node_echo"),
    path("projects/", views.project_list, name="api_projects"),
    path("projects/<uuid:code>/pseudonyms/", views.project_mapping, name="api_project_mapping"),
    path("jobs/", views.job_list, name="api_jobs"),
    path("jobs/<uuid:code>/", views.job_detail, name="api_job"),
    path("jobs/<uuid:code>/rows/", views.job_rows, name="api_job_rows"),
    path("jobs/<uuid:code>/matches/", views.job_matches, name="api_job_matches"),
    path("jobs/<uuid:code>/retrieve/", views.job_retrieve, name="api_job_retrieve"),
    path("jobs/<uuid:code>/manifest.csv", views.job_manifest, name="api_job_manifest"),
    path("jobs/<uuid:code>/files.zip", views.job_files_zip, name="api_job_files_zip"),
    re_path(rf"^jobs/{CODE}/matches\.(?P<fmt>csv|xlsx)$", views.job_export, name="api_job_export"),
    re_path(
        rf"^jobs/{CODE}/(?P<action>start|pause|resume|cancel|retry|urgent)/$",
        views.job_action,
        name="api_job_action",
    ),
]
