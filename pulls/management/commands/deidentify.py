"""`python manage.py deidentify --project SLUG SRC DST [--processes N]`

Pseudonymises the DICOM files under SRC (every folder) into DST with a
pseudonymised project's settings, key and mapping: the same code as a
retrieval into that project (pulls.deid), so a patient gets the same pseudonym,
UIDs and date shift here as in the project. Files that may show burned-in
text are left out unless the project keeps them; files that are not DICOM are
left out; both are counted. The mapping grows in the database, for the
project's owners; nothing of it is written to DST.
"""

from __future__ import annotations

import os
from multiprocessing import get_context
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from pulls.audit.events import audit_record
from pulls.cli.inline import database_ready
from pulls.deid.files import BurnedIn, Pseudonymiser
from pulls.deid.mapping import record_mapping
from pulls.deid.projects import pseudonymiser_for
from pulls.deid.walker import UnreadableDataSet
from pulls.models import AuditAction, Project

_BATCH = 64
_worker: Pseudonymiser | None = None
_root = ""


def _start(pseudonymiser: Pseudonymiser, root: str) -> None:
    global _worker, _root
    _worker, _root = pseudonymiser, root


def _one(path: str):
    """(placed, None) or (None, why it was left out)."""
    try:
        return _worker.place_file(path, _root).placed(), None
    except BurnedIn as why:
        return None, f"may show burned-in text: {why.reason}"
    except (UnreadableDataSet, ValueError, IndexError) as why:
        return None, f"not a DICOM file this can read: {why}"


def _files(source: Path):
    for folder, folders, names in os.walk(source):
        folders.sort()
        for name in sorted(names):
            yield f"{folder}/{name}"


class Command(BaseCommand):
    help = "Pseudonymise the DICOM files of a folder with a project's settings and mapping."

    def add_arguments(self, parser):
        parser.add_argument("--project", required=True, help="a pseudonymised project's slug")
        parser.add_argument("source", type=Path, help="folder of DICOM files (read only)")
        parser.add_argument("destination", type=Path, help="where the pseudonymised files go")
        parser.add_argument("--processes", type=int, default=1, help="worker processes")

    def handle(self, *args, project, source, destination, processes, **options):
        database_ready(self.stderr.write)
        found = Project.objects.filter(slug=project).first()
        if found is None:
            raise CommandError(f"no project {project!r}: give the slug of a pseudonymised project")
        pseudonymiser = pseudonymiser_for(found)
        if pseudonymiser is None:
            raise CommandError(
                f"the project {found.name} is identifiable: it has no pseudonyms to give; "
                "name a pseudonymised project"
            )
        source, destination = Path(source), Path(destination)
        if not source.is_dir():
            raise CommandError(f"{source} is not a folder")
        if destination.resolve().is_relative_to(source.resolve()):
            raise CommandError("the destination may not be inside the source folder")
        destination.mkdir(parents=True, exist_ok=True)
        done, left_out = 0, []
        files = list(_files(source))
        batch = []
        if processes > 1:
            pool = get_context("fork").Pool(
                processes, initializer=_start, initargs=(pseudonymiser, str(destination))
            )
            results = pool.imap(_one, files, chunksize=32)
        else:
            pool = None
            _start(pseudonymiser, str(destination))
            results = map(_one, files)
        try:
            for path, (placed, why) in zip(files, results, strict=True):
                if placed is None:
                    left_out.append((path, why))
                    continue
                done += 1
                batch.append(placed)
                if len(batch) >= _BATCH:
                    record_mapping(found, batch)
                    batch = []
            record_mapping(found, batch)
        finally:
            if pool is not None:
                pool.close()
                pool.join()
        audit_record(
            action=AuditAction.DEIDENTIFY, project=found, actor_label="cli",
            target=f"{done} files pseudonymised with {found.name}"[:300],
            details={"files": done, "left_out": len(left_out)},
        )  # fmt: skip
        for path, why in left_out[:20]:
            self.stderr.write(f"left out {path}: {why}")
        if len(left_out) > 20:
            self.stderr.write(f"... and {len(left_out) - 20} more left out")
        self.stdout.write(
            self.style.SUCCESS(
                f"{done} files pseudonymised into {destination}; {len(left_out)} left out"
            )
        )
