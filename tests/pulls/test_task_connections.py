"""A worker keeps its database connection from one task to the next."""

import time

from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun
from django.db import connection

from portal.celery import app
from pulls.workers.tasks import run_items


def _task_boundary() -> None:
    """What a worker does between two tasks: Celery's Django fix-up, then ours."""
    fixup = DjangoWorkerFixup(app)
    for signal in (task_postrun, task_prerun):
        fixup.close_database()
        signal.send(sender=run_items, task=run_items, task_id="t", args=(), kwargs={})


def test_the_connection_outlives_a_task_and_is_closed_past_its_age(transactional_db):
    connection.ensure_connection()
    kept = connection.connection
    _task_boundary()
    assert connection.connection is kept  # not opened again (~1 ms of CPU per task)

    connection.close_at = time.monotonic() - 1  # older than CONN_MAX_AGE
    _task_boundary()
    assert connection.connection is None
