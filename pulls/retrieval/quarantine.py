"""Instances nobody asked for: out of the staging area, into quarantine and the audit log.

A PACS may send studies no job asked for (a misdirected C-MOVE, a retry after
the item gave up, a C-GET answered with more than it named). They are never
mixed into a project and never silently dropped: they go to
``quarantine/<date>/<study folder>/`` with one audit event per study. Staged
ones (C-MOVE) are moved by the reconciler after
PACSNPULL_QUARANTINE_AFTER_SECONDS; a C-GET's, which its worker writes to the
project's ``.unrequested`` folder (``receiving.ProjectWriter``), right after
that C-GET, or by the reconciler if the worker died first.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
from datetime import date
from pathlib import Path

from django.conf import settings

from pulls.audit.events import audit_record
from pulls.deid.writer import WITHHELD
from pulls.dicom.paths import safe_component
from pulls.dicom.receiving import UNREQUESTED, Placed
from pulls.dicom.staging import INDEX_NAME, TEMP_PREFIX, remove_cut_writes
from pulls.models import (
    ACTIVE_JOB_STATUSES,
    AuditAction,
    ItemStatus,
    Job,
    JobItem,
    JobKind,
    JobStatus,
    Project,
)

log = logging.getLogger(__name__)


def _wanted_folders() -> set[str]:
    """Staging folder names of studies that an unfinished retrieval waits for."""
    uids = JobItem.objects.filter(
        job__kind__in=(JobKind.MOVE, JobKind.GET),
        job__status__in=(*ACTIVE_JOB_STATUSES, JobStatus.PAUSED),
        status__in=(ItemStatus.PENDING, ItemStatus.RUNNING),
    ).values_list("identifier__StudyInstanceUID", flat=True)
    return {safe_component(str(uid)) for uid in uids if uid}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # moved meanwhile (placed by a worker)
        return 0.0


def staging_sweep(*, now: float | None = None) -> dict[str, int]:
    """The reconciler's sweep: staged studies no retrieval waits for, and the
    C-GET instances of other studies that a dead worker left in a project,
    once older than PACSNPULL_QUARANTINE_AFTER_SECONDS, go to quarantine."""
    now = time.time() if now is None else now
    cutoff = now - settings.PACSNPULL_QUARANTINE_AFTER_SECONDS
    counts = {"studies": 0, "instances": 0, "partial_removed": 0}
    staging: Path = settings.PACSNPULL_STAGING_DIR
    if staging.is_dir():
        _sweep_staging(staging, counts, now=now, cutoff=cutoff)
        # What a C-GET worker into a pseudonymised project withheld, if it died
        # before setting it aside.
        _sweep_unrequested(staging / WITHHELD, counts, now=now, cutoff=cutoff)
    # Those a worker sets aside right after its C-GET, unless it died first.
    for project in Project.objects.only("slug", "storage_path"):
        try:
            _sweep_unrequested(project.storage_dir / UNREQUESTED, counts, now=now, cutoff=cutoff)
        except OSError as exc:  # one project's folder must not stop the others'
            log.warning("quarantine sweep of project %s: %s", project.slug, exc.strerror)
    return counts


def _sweep_unrequested(
    unrequested: Path, counts: dict[str, int], *, now: float, cutoff: float
) -> None:
    if not unrequested.is_dir():
        return
    for folder in unrequested.iterdir():
        if not folder.is_dir():
            continue
        ages = {path: _mtime(path) for path in folder.iterdir()}
        if max(ages.values(), default=_mtime(folder)) >= cutoff:
            continue  # a C-GET may be writing to it, or its worker setting it aside
        files = [path for path in ages if path.name.endswith(".dcm")]
        if files:
            counts["studies"] += 1
            counts["instances"] += set_aside(files, folder.name, now=now)
        with contextlib.suppress(OSError):
            folder.rmdir()  # quiet for the quarantine age: no C-GET is writing to it


def _sweep_staging(staging: Path, counts: dict[str, int], *, now: float, cutoff: float) -> None:
    wanted = _wanted_folders()
    counts["partial_removed"] += remove_cut_writes(staging / ".incoming", older_than=cutoff)
    for folder in staging.iterdir():
        if not folder.is_dir() or folder.name.startswith(".") or folder.name in wanted:
            continue
        ages = {path: _mtime(path) for path in folder.iterdir()}
        if max(ages.values(), default=_mtime(folder)) >= cutoff:
            continue
        for path in ages:
            if path.name.startswith(TEMP_PREFIX):  # a write cut short by a crash
                path.unlink(missing_ok=True)
                counts["partial_removed"] += 1
        files = [path for path in ages if path.name.endswith(".dcm") and path.name[0] != "."]
        if files:
            counts["studies"] += 1
            counts["instances"] += set_aside(files, folder.name, now=now)
        # Placed and done with, or set aside: only its index (or nothing) is left.
        # An instance arriving meanwhile makes the folder again (receiving._name).
        (folder / INDEX_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # unless a late instance is being written


def _move(path: Path, target: Path) -> bool:
    """Move one file (across file systems too); False if it is gone already
    (taken meanwhile by a worker, or by the sweep)."""
    try:
        os.replace(path, target)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    # Another file system: a copy under a temporary name, renamed into place,
    # then the original removed (whoever copies it second gets the same file).
    temp = target.with_name(f"{TEMP_PREFIX}{os.getpid()}-{target.name}")
    try:
        shutil.copyfile(path, temp)
        os.replace(temp, target)
    except FileNotFoundError:
        temp.unlink(missing_ok=True)
        return False
    except BaseException:
        temp.unlink(missing_ok=True)  # no half copy left in quarantine (a full disk)
        raise
    path.unlink(missing_ok=True)
    return True


def set_aside(
    files: list[Path],
    folder: str,
    *,
    now: float | None = None,
    job: Job | None = None,
    why: str = "",
) -> int:
    """Move one study's ``files`` to ``quarantine/<date>/<folder>/`` and record
    one audit event (saying ``why``, if not that nobody asked for them); how
    many were moved."""
    now = time.time() if now is None else now
    target = settings.PACSNPULL_QUARANTINE_DIR / date.fromtimestamp(now).isoformat() / folder
    target.mkdir(parents=True, exist_ok=True)
    moved = sum(_move(path, target / path.name) for path in files)
    if moved:
        audit_record(
            action=AuditAction.QUARANTINE,
            job=job,
            target=folder,
            success=False,
            details={"instances": moved, "quarantine": str(target)},
            message=why
            or (
                "instances the C-GET did not ask for were received and set aside"
                if job is not None
                else "instances no retrieval asked for were received and set aside"
            ),
        )
    return moved


def set_aside_unrequested(project_dir: Path, unrequested: list[Placed], *, job: Job) -> int:
    """A C-GET's instances of other studies or series (``ProjectWriter.unrequested``),
    out of the project's folder into quarantine, one audit event per study."""
    by_folder: dict[str, list[Path]] = {}
    for placed in unrequested:
        path = project_dir / placed.path
        by_folder.setdefault(path.parent.name, []).append(path)
    # The emptied study folders stay: another C-GET of the project may be writing
    # to one right now. The sweep removes them once they are quiet.
    return sum(set_aside(files, folder, job=job) for folder, files in by_folder.items())


def set_aside_withheld(withheld: list[Placed], *, job: Job | None) -> int:
    """Instances a pseudonymised project does not take (they may show burned-in
    text, or cannot be de-identified), as they came, from the staging area into
    quarantine: one audit event per study and reason."""
    by_folder: dict[tuple[str, str], list[Path]] = {}
    for placed in withheld:
        folder = f"withheld-{safe_component(placed.source_study_uid)}"
        by_folder.setdefault((folder, placed.burned_in), []).append(Path(placed.path))
    return sum(
        set_aside(files, folder, job=job, why=f"instances set aside, not pseudonymised: {why}")
        for (folder, why), files in by_folder.items()
    )
