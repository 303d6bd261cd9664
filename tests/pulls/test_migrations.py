"""Upgrades keep what a running portal holds."""

from __future__ import annotations

import contextlib

from django.db import connection
from django.db.migrations.executor import MigrationExecutor

# The other apps as they are now (pulls' later migrations need them so).
ACCOUNTS = ("accounts", "0003_may_pull_identifiable")


@contextlib.contextmanager
def _before(migration: str):
    """The database as it was before ``migration`` of pulls (its historical
    models), brought up to date again however the test ends."""
    executor = MigrationExecutor(connection)
    nodes = [("pulls", migration), ACCOUNTS]
    try:
        executor.migrate(nodes)
        yield executor.loader.project_state(nodes).apps
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())


def _upgrade() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_matches_found_before_the_description_columns_are_filtered_by_them_after(flushable_db):
    with _before("0013_job_is_search") as apps:
        user = apps.get_model("accounts", "User").objects.create(username="u")
        project = apps.get_model("pulls", "Project").objects.create(name="P", slug="p")
        node = apps.get_model("pulls", "PacsNode").objects.create(
            name="N", host="127.0.0.1", port=104, ae_title="PACS"
        )
        job = apps.get_model("pulls", "Job").objects.create(
            kind="find", owner=user, project=project, node=node
        )
        item = apps.get_model("pulls", "JobItem").objects.create(job=job, row=1, identifier={})
        apps.get_model("pulls", "FindResult").objects.bulk_create(
            apps.get_model("pulls", "FindResult")(
                job=job,
                item=item,
                attributes={"StudyDescription": f"CT CHEST {n}", "SeriesDescription": "Axial"},
            )  # fmt: skip
            for n in range(2500)  # more than one slice of the fill
        )
        _upgrade()

    from pulls.models import FindResult
    from pulls.selectors import job_matches

    assert job_matches(job=FindResult.objects.first().job, description="ct chest 24?").count() == 10
    assert FindResult.objects.filter(series_description="Axial").count() == 2500


def test_projects_from_before_pseudonymisation_stay_identifiable_and_their_owners_keep_pulling(
    flushable_db,
):
    """Their files are as the PACS sent them: they become identifiable, each with
    a key of its own, and their owners get the grant that identifiable projects
    now need, each grant in the audit log."""
    with _before("0014_findresult_descriptions") as apps:
        User = apps.get_model("accounts", "User")
        Project = apps.get_model("pulls", "Project")
        Membership = apps.get_model("pulls", "Membership")
        owner, viewer = User.objects.create(username="olga"), User.objects.create(username="vic")
        for slug in ("one", "two"):
            project = Project.objects.create(name=slug, slug=slug)
            Membership.objects.create(project=project, user=owner, role="owner")
            Membership.objects.create(project=project, user=viewer, role="viewer")
        _upgrade()

    from accounts.models import User as Now
    from pulls.models import AuditAction, AuditEvent, Deidentification
    from pulls.models import Project as Current

    projects = list(Current.objects.order_by("slug"))
    assert {p.deidentification for p in projects} == {Deidentification.IDENTIFIABLE}
    assert len({p.pseudonym_secret for p in projects}) == 2
    assert Now.objects.get(username="olga").may_pull_identifiable
    assert not Now.objects.get(username="vic").may_pull_identifiable
    event = AuditEvent.objects.get(action=AuditAction.PERMISSION_CHANGED)
    assert event.target == "olga may pull identifiable data (owner of one, two)"
    new = Current.objects.create(name="new", slug="new")
    assert new.deidentification == Deidentification.PSEUDONYMISED


def test_jobs_that_ended_before_notifications_are_not_told_after_the_upgrade(flushable_db):
    """An upgrade mails nobody about old jobs; each project gets a webhook secret
    of its own."""
    from django.utils import timezone

    with _before("0016_delivery") as apps:
        User = apps.get_model("accounts", "User")
        Project = apps.get_model("pulls", "Project")
        PacsNode = apps.get_model("pulls", "PacsNode")
        Job = apps.get_model("pulls", "Job")
        owner = User.objects.create(username="olga", email="olga@example.org")
        node = PacsNode.objects.create(name="N", ae_title="N", host="127.0.0.1", port=104)
        for slug in ("one", "two"):
            project = Project.objects.create(name=slug, slug=slug)
            for status in ("done", "failed", "cancelled", "running"):
                Job.objects.create(
                    kind="find", owner=owner, project=project, node=node, status=status,
                    finished_at=timezone.now() if status != "running" else None,
                )  # fmt: skip
        _upgrade()

    from pulls.models import Job as Current
    from pulls.models import Project as Projects
    from pulls.notifications.due import jobs_due

    assert list(jobs_due()) == []
    assert Current.objects.filter(notified_at__isnull=True).count() == 2  # the running ones
    assert len({p.webhook_secret for p in Projects.objects.all()}) == 2
