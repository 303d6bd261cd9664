"""Seed-compatible: `python manage.py find --config CONF.json --query QUERY.json [--out DIR]`.

Results go to DIR/<job_title>/qry/find_results.csv (one line per match, one
stable header); the job is in the database and the audit log like any other.
"""

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from pulls.cli.inline import (
    database_ready,
    load_inputs,
    output_folder,
    run_inline,
    write_find_results,
)
from pulls.cli.seedconfig import describe_limits
from pulls.limits import throttle
from pulls.models import JobKind
from pulls.services import cli_setup, job_create


class Command(BaseCommand):
    help = "Run a batch C-FIND from a prototype CONF.json and QUERY.json (or CSV/XLSX)."

    def add_arguments(self, parser):
        parser.add_argument("--config", type=Path, required=True, help="the prototype's CONF.json")
        parser.add_argument("--query", type=Path, required=True, help="QUERY.json, .csv or .xlsx")
        parser.add_argument("--out", type=Path, help="output folder (default: instance/cli)")
        parser.add_argument("--user", help="portal user to act as (default: 'cli')")

    def handle(self, *args, config: Path, query: Path, out: Path | None, user, **options):
        config, query = Path(config), Path(query)
        out = Path(out) if out else None
        conf, parsed = load_inputs(config, query)
        database_ready(self.stderr.write)
        owner, project, node = cli_setup(config=conf, username=user)
        self.stderr.write(describe_limits(conf, throttle.where_limits_are()))
        job = job_create(
            kind=JobKind.FIND,
            owner=owner,
            project=project,
            node=node,
            rows=parsed.rows,
            row_numbers=parsed.numbers,
            title=conf.job_title,
            source_name=query.name,
        )
        job = run_inline(job)
        self.stderr.write("")
        folder = output_folder(out or settings.INSTANCE_DIR / "cli", conf.job_title, "qry")
        path = write_find_results(job, folder)
        summary = (
            f"{job.items_done} of {job.items_total} rows done, {job.items_failed} failed, "
            f"{job.matches} matches; results in {path}"
        )
        if job.status in ("paused", "cancelled") or job.waiting_reason:
            raise CommandError(f"{summary}\nthe job is {job.status}: {job.waiting_reason}")
        if job.items_failed:
            failed = job.items.filter(status="failed").order_by("row")[:20]
            lines = "\n".join(f"  row {i.row}: {i.error_message}" for i in failed)
            raise CommandError(f"{summary}\n{lines}")
        self.stdout.write(self.style.SUCCESS(summary))
