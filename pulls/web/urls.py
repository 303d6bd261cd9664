from django.urls import path, re_path

from pulls.web import audit as audit_views
from pulls.web import delivery, search, views
from pulls.web import projects as project_views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("live/", views.dashboard_live, name="dashboard_live"),
    path("nodes/", views.node_list, name="node_list"),
    path("nodes/<uuid:code>/", views.node_detail, name="node_detail"),
    path("projects/", project_views.project_list, name="project_list"),
    path("projects/new/", project_views.project_new, name="project_new"),
    path("projects/<slug:slug>/", project_views.project_detail, name="project_detail"),
    path(
        "projects/<slug:slug>/deidentification/",
        project_views.project_settings,
        name="project_settings",
    ),
    path("projects/<slug:slug>/pseudonyms/", project_views.project_mapping, name="project_mapping"),
    path(
        "projects/<slug:slug>/pseudonyms.csv",
        project_views.project_mapping_csv,
        name="project_mapping_csv",
    ),
    path("projects/<slug:slug>/files.zip", delivery.project_files_zip, name="project_files_zip"),
    path(
        "projects/<slug:slug>/files/delete/",
        delivery.project_files_delete,
        name="project_files_delete",
    ),
    path("projects/<slug:slug>/send/", delivery.project_send, name="project_send"),
    path("projects/<slug:slug>/delivery/", delivery.project_delivery, name="project_delivery"),
    path("audit/", audit_views.audit_list, name="audit_list"),
    path("audit/export.csv", audit_views.audit_export, name="audit_export"),
    path("nodes/<uuid:code>/echo/", views.node_echo, name="node_echo"),
    path("jobs/new/", views.job_new, name="job_new"),
    path("search/", search.search_page, name="search"),
    path("search/<uuid:code>/", search.search_results, name="search_results"),
    path("search/<uuid:code>/expand/", search.search_expand, name="search_expand"),
    path("search/<uuid:code>/retrieve/", search.search_retrieve, name="search_retrieve"),
    path("search/<uuid:code>/save/", search.search_save, name="search_save"),
    path("jobs/<uuid:code>/", views.job_detail, name="job_detail"),
    path("jobs/<uuid:code>/progress/", views.job_progress, name="job_progress"),
    path("jobs/<uuid:code>/rows/", views.job_rows, name="job_rows"),
    path("jobs/<uuid:code>/urgent/", views.job_urgent, name="job_urgent"),
    path("jobs/<uuid:code>/start/", views.job_start, name="job_start"),
    path("jobs/<uuid:code>/cancel/", views.job_cancel, name="job_cancel"),
    path("jobs/<uuid:code>/retry/", views.job_retry, name="job_retry"),
    path("jobs/<uuid:code>/pause/", views.job_pause, name="job_pause"),
    path("jobs/<uuid:code>/resume/", views.job_resume, name="job_resume"),
    path("jobs/<uuid:code>/retrieve/", views.job_retrieve, name="job_retrieve"),
    path("jobs/<uuid:code>/send/", delivery.job_send, name="job_send"),
    path("jobs/<uuid:code>/files.zip", delivery.job_files_zip, name="job_files_zip"),
    path("jobs/<uuid:code>/files/delete/", delivery.job_files_delete, name="job_files_delete"),
    path("jobs/<uuid:code>/manifest.csv", views.job_manifest, name="job_manifest"),
    re_path(
        r"^jobs/(?P<code>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
        r"/failed\.(?P<fmt>csv|json|xlsx)$",
        views.job_failed_rows,
        name="job_failed_rows",
    ),
    re_path(r"^jobs/example\.(?P<fmt>csv|json|xlsx)$", views.query_example, name="query_example"),
    # The code as Django's uuid converter takes it: a malformed one is a 404.
    re_path(
        r"^jobs/(?P<code>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
        r"/matches\.(?P<fmt>csv|xlsx)$",
        views.job_export,
        name="job_export",
    ),
]
