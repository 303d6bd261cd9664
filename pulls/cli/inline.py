"""Running a job in the terminal: the seed-compatible `manage.py find|move`.

The same code path as the workers (runner.run_chunk on claimed items), only
in this process and with a progress bar instead of Celery.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandError
from django.utils import timezone
from django.utils.text import slugify

from pulls.cli.seedconfig import ConfigError, SeedConfig, load_seed_config
from pulls.jobs import exports, items, queueing
from pulls.models import ItemStatus, Job, JobItem, JobStatus
from pulls.queries.files import ParsedQueries, parse_query_file
from pulls.workers import runner


def database_ready(say: Callable[[str], None]) -> None:
    """Create or bring up to date the database on the command line's first use
    (a fresh clone, before ``make run`` ever ran): the commands work the first
    time. A database that cannot be reached is a one-line error."""
    from django.core.management import call_command
    from django.db import DatabaseError, connection
    from django.db.migrations.executor import MigrationExecutor

    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        raise CommandError(
            f"the database cannot be reached ({exc}); check DATABASE_URL, or unset it to use "
            f"SQLite in {settings.INSTANCE_DIR}"
        ) from None
    if plan:
        say(f"setting up the database ({len(plan)} migrations; once) ...")
        call_command("migrate", interactive=False, verbosity=0)


def seed_config(config: Path) -> SeedConfig:
    """The prototype's CONF.json, or a CommandError naming what is wrong."""
    try:
        return load_seed_config(config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def load_inputs(config: Path, query: Path) -> tuple[SeedConfig, ParsedQueries]:
    """The prototype's CONF.json and a checked query file, or a CommandError saying why."""
    conf = seed_config(config)
    try:
        data = query.read_bytes()
    except OSError as exc:
        raise CommandError(f"{query}: {exc.strerror}") from None
    parsed = parse_query_file(
        data,
        name=query.name,
        max_rows=settings.PACSNPULL_QUERY_MAX_ROWS,
        max_bytes=settings.PACSNPULL_QUERY_MAX_BYTES,
    )
    if not parsed.ok:
        listed = "\n".join(f"  {p}" for p in parsed.problems)
        raise CommandError(f"{query}: nothing was sent. Fix these and run again:\n{listed}")
    return conf, parsed


def progress_bar(job: Job, *, width: int = 30, stream=None) -> None:
    stream = stream or sys.stderr  # as it is now (a caller may have redirected it)
    done = job.items_done + job.items_failed + job.items_cancelled
    total = max(job.items_total, 1)
    filled = int(width * done / total)
    stream.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{job.items_total} rows, "
        f"{job.items_failed} failed, {job.matches} matches"
        + (f" ({job.waiting_reason})" if job.waiting_reason else "")
    )
    stream.flush()


def run_inline(job: Job, *, on_progress: Callable[[Job], None] = progress_bar) -> Job:
    """Work every item of a started job here, retries included, until all are final."""
    Job.objects.filter(pk=job.pk, status=JobStatus.DRAFT).update(status=JobStatus.QUEUED)
    while True:
        if Job.objects.filter(
            pk=job.pk, status__in=(JobStatus.PAUSED, JobStatus.CANCELLED)
        ).exists():
            break  # paused (a full disk, a user) or cancelled: the caller says so
        now = timezone.now()
        ready = list(
            JobItem.objects.filter(job=job, status=ItemStatus.PENDING)
            .exclude(not_before__gt=now)
            .order_by("row")
            .values_list("pk", flat=True)
        )
        for start in range(0, len(ready), queueing.CHUNK_SIZE):
            message = runner.run_chunk(ready[start : start + queueing.CHUNK_SIZE])
            on_progress(_refreshed(job))
            if message.startswith(runner.DEFERRED):
                if "suspended" in message:
                    return _refreshed(job)  # the caller says why
                time.sleep(runner.RETRY_DEFERRED_SECONDS)
        waiting = JobItem.objects.filter(job=job, status=ItemStatus.PENDING)
        if not ready and not waiting.exists():
            break
        if not ready:
            first = waiting.order_by("not_before").values_list("not_before", flat=True).first()
            if first is not None:
                time.sleep(min(60.0, max(0.1, (first - timezone.now()).total_seconds())))
    job = _refreshed(job)
    on_progress(job)
    return job


def _refreshed(job: Job) -> Job:
    """The job with its counters recomputed."""
    items.job_refresh_counters(job.pk)
    return Job.objects.get(pk=job.pk)


def output_folder(out: Path, job_title: str, kind: str) -> Path:
    """``OUT/<job_title>/<kind>/``; the title is made a safe folder name."""
    name = slugify(job_title) or "job"
    folder = out / name / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_find_results(job: Job, folder: Path) -> Path:
    path = folder / "find_results.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        for chunk in exports.csv_chunks(job):
            fh.write(chunk)
    return path


def write_retrieval_results(job: Job, folder: Path) -> Path:
    """One line per item: what was asked, what the PACS held, what is on disk."""
    import csv

    path = folder / "move_results.csv"
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["row", "status", "StudyInstanceUID", "SeriesInstanceUID", "expected", "received",
             "failed", "bytes", "attempts", "error"]
        )  # fmt: skip
        for item in job.items.order_by("row"):
            writer.writerow(
                [
                    item.row, item.status, item.identifier.get("StudyInstanceUID", ""),
                    item.identifier.get("SeriesInstanceUID", ""), item.instances_expected,
                    item.instances_received, item.instances_failed, item.bytes_received,
                    item.attempts, exports.spreadsheet_safe(item.error_message),
                ]
            )  # fmt: skip
    return path


def write_mapping(project, folder: Path) -> Path:
    """A pseudonymised command-line project's mapping, ``mapping.csv`` beside the
    results, readable by its owner alone (mode 0600, from its creation)."""
    import os

    from pulls.deid.mapping import mapping_csv

    path = folder / "mapping.csv"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # one that existed keeps no wider mode
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
        for chunk in mapping_csv(project):
            fh.write(chunk)
    return path
