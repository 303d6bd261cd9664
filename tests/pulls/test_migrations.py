"""Upgrades keep what a running portal holds."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("pulls", "0013_job_is_search")]
AFTER = [("pulls", "0014_findresult_descriptions")]


@pytest.mark.django_db(transaction=True)
def test_matches_found_before_the_description_columns_are_filtered_by_them_after():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
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

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    from pulls.models import FindResult
    from pulls.selectors import job_matches

    assert job_matches(job=FindResult.objects.first().job, description="ct chest 24?").count() == 10
    assert FindResult.objects.filter(series_description="Axial").count() == 2500
