"""Benchmark of a worker's database work per message as a job grows: the claim
of the job's next rows, the check of a message whose rows were taken, the
refresh of the job's counters, and the records of a row's instances.

    .venv/bin/python bench/bookkeeping.py [--rows 1000 20000 100000] [--calls 50]
    .venv/bin/python -m pulls.sandbox.postgres -- .venv/bin/python bench/bookkeeping.py

Own SQLite under bench/results/bookkeeping/ (or --work), or the database of
DATABASE_URL (the second line: a PostgreSQL cluster of its own, analysed after
the rows are saved, as autovacuum would; SQLite gets no statistics, as nothing
gathers them in a portal's database). No worker, no PACS, no Redis.

For each job size, a retrieval job with that many rows, all queued, and three
moments of its life: none done, half done, all but 1 % done. At each, the
median in milliseconds of --calls calls of

- ``claim``: items_claim_next (a worker going on with the job takes 5 rows);
- ``stale``: items_claim of 5 rows already done (most of a job's messages);
- ``refresh``: job_refresh_counters (each worker, every second; it holds the
  write lock on SQLite, the job's row on PostgreSQL);
- ``records``: the records of a row's 30 instances, in a transaction of their
  own (the row finisher writes them with the row's outcome), in a project
  that holds 30 records per row done.

Each holds the database (SQLite's only writer) while it runs: none may grow
with the job. Target: each under 1 ms at 100,000 rows for claim and stale;
refresh under 50 ms; records under 3 ms (the transfer of 30 instances takes
~10 ms on one stream).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

from fixtures import fresh_database, owner_project_node  # bench/ is sys.path[0]
from workdir import REPO, default_work, work_dir

DEFAULT_WORK = default_work("bookkeeping")
WORK = work_dir("bookkeeping")
sys.path.insert(0, str(REPO))

os.environ.update(
    PACSNPULL_INSTANCE_DIR=str(WORK / "instance"),
    PACSNPULL_STAGING_DIR=str(WORK / "instance" / "staging"),
    PACSNPULL_STORAGE_ROOT=str(WORK / "instance" / "storage"),
    DJANGO_SETTINGS_MODULE="portal.settings",
)
MOMENTS = (("none done", 0.0), ("half done", 0.5), ("99 % done", 0.99))


def _timed(call, times: int, after=None) -> float:
    """Median milliseconds of ``times`` calls (``after`` each, untimed)."""
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        result = call()
        spent.append((time.perf_counter() - started) * 1000)
        if after is not None:
            after(result)
    return statistics.median(spent)


def _job(rows: int, owner, project, node):
    from django.db import connection
    from django.utils import timezone

    from pulls.jobs import items
    from pulls.models import Job, JobItem, JobKind, JobStatus

    job = Job.objects.create(
        kind=JobKind.GET, owner=owner, project=project, node=node, status=JobStatus.RUNNING
    )
    items.items_insert(
        job,
        [{"StudyInstanceUID": f"1.2.826.0.1.3680043.8.498.{job.pk}.{n}"} for n in range(rows)],
        numbers=range(1, rows + 1),
        expected=[30] * rows,
    )
    JobItem.objects.filter(job=job).update(queued_at=timezone.now())
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {JobItem._meta.db_table}")  # noqa: S608  (a model's table)
    return job


def _placed(study: str, count: int = 30) -> list:
    """A row's instances as the receiving side reports them (3 series of 10)."""
    from pulls.dicom.receiving import Placed

    return [
        Placed(
            path=f"PAT/{study}/{study}.{n // 10}/{study}.{n // 10}.{n}.dcm",
            patient_id="PAT",
            study_instance_uid=study,
            series_instance_uid=f"{study}.{n // 10}",
            sop_instance_uid=f"{study}.{n // 10}.{n}",
            modality="CT",
            size=10_428,
        )
        for n in range(count)
    ]


def _records_upto(project, job, rows: int) -> None:
    """The project's records of the job's first ``rows`` rows (30 instances each)."""
    from django.db import transaction

    from pulls.retrieval import records

    have = project.instances.count() // 30
    with transaction.atomic():
        for row in range(have + 1, rows + 1):
            records.record_instances(project, _placed(f"1.2.826.0.1.3680043.8.498.{job.pk}.{row}"))


def one_size(rows: int, calls: int, owner, project, node) -> list[dict[str, object]]:
    from django.db import transaction

    from pulls.jobs import items
    from pulls.models import ItemStatus, JobItem
    from pulls.retrieval import records

    job = _job(rows, owner, project, node)
    results = []
    recorded = itertools.count()
    for moment, fraction in MOMENTS:
        done = int(rows * fraction)
        _records_upto(project, job, done)
        JobItem.objects.filter(job=job, row__lte=done).update(
            status=ItemStatus.DONE, instances_received=30, queued_at=None
        )
        # A stale message's rows were taken by a worker: done ones, or (none
        # done yet) the first rows, running.
        taken = list(
            JobItem.objects.filter(job=job, status=ItemStatus.DONE)
            .order_by("-row")
            .values_list("pk", flat=True)[:5]
        )
        if not taken:
            taken = list(JobItem.objects.filter(job=job, row__lte=5).values_list("pk", flat=True))
            JobItem.objects.filter(pk__in=taken).update(status=ItemStatus.RUNNING)

        def claim() -> list:
            claimed = items.items_claim_next(job.pk, token=uuid.uuid4(), worker="bench", limit=5)
            assert claimed, "nothing to claim"
            return claimed

        def give_back(claimed: list) -> None:  # the next claim finds the same rows
            JobItem.objects.filter(pk__in=[item.pk for item in claimed]).update(
                status=ItemStatus.PENDING
            )

        stale = functools.partial(items.items_claim, taken, worker="bench")

        def record() -> None:  # new instances each time, as a row's are
            with transaction.atomic():
                records.record_instances(project, _placed(f"2.25.{job.pk}.{next(recorded)}"))

        results.append(
            {
                "rows": rows,
                "moment": moment,
                "claim": _timed(claim, calls, after=give_back),
                "stale": _timed(stale, calls),
                "refresh": _timed(lambda: items.job_refresh_counters(job.pk), max(calls // 5, 3)),
                "records": _timed(record, calls),
            }
        )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000, 20_000, 100_000])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help="folder for the run")
    args = parser.parse_args()

    fresh_database(WORK)
    from django.db import connection

    owner, project, node = owner_project_node()
    print(f"{connection.vendor}, ms per call (median of {args.calls}):")
    print(
        f"{'rows':>8}  {'moment':<10}  {'claim':>7}  {'stale':>7}  {'refresh':>8}  {'records':>8}"
    )
    for rows in args.rows:
        for one in one_size(rows, args.calls, owner, project, node):
            print(
                f"{one['rows']:8d}  {one['moment']:<10}  {one['claim']:7.2f}  "
                f"{one['stale']:7.2f}  {one['refresh']:8.2f}  {one['records']:8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
