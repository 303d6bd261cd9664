"""Instances nobody asked for: out of the staging area, into quarantine and the audit log.

A PACS may send studies no job asked for (a misdirected C-MOVE, a retry after
the item gave up). They are never mixed into a project and never silently
dropped: after PACSNPULL_QUARANTINE_AFTER_SECONDS the reconciler moves them to
``quarantine/<date>/<study folder>/`` and records one audit event per study.
"""

from __future__ import annotations

import contextlib
import os
import time
from datetime import date
from pathlib import Path

from django.conf import settings

from pulls.audit import audit_record
from pulls.dicom.paths import safe_component
from pulls.dicom.staging import INDEX_NAME, TEMP_PREFIX, remove_cut_writes
from pulls.models import (
    ACTIVE_JOB_STATUSES,
    AuditAction,
    ItemStatus,
    JobItem,
    JobKind,
    JobStatus,
)


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
    staging: Path = settings.PACSNPULL_STAGING_DIR
    if not staging.is_dir():
        return {"studies": 0, "instances": 0, "partial_removed": 0}
    now = time.time() if now is None else now
    cutoff = now - settings.PACSNPULL_QUARANTINE_AFTER_SECONDS
    wanted = _wanted_folders()
    moved_studies = moved = 0
    removed = remove_cut_writes(staging / ".incoming", older_than=cutoff)
    for folder in staging.iterdir():
        if not folder.is_dir() or folder.name.startswith(".") or folder.name in wanted:
            continue
        ages = {path: _mtime(path) for path in folder.iterdir()}
        if max(ages.values(), default=_mtime(folder)) >= cutoff:
            continue
        for path in ages:
            if path.name.startswith(TEMP_PREFIX):  # a write cut short by a crash
                path.unlink(missing_ok=True)
                removed += 1
        files = [path for path in ages if path.name.endswith(".dcm") and path.name[0] != "."]
        if not files:
            # Placed and done with: only its index (or nothing) is left. An
            # instance arriving meanwhile makes the folder again (receiving._name).
            (folder / INDEX_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()
            continue
        target = (
            settings.PACSNPULL_QUARANTINE_DIR / date.fromtimestamp(now).isoformat() / folder.name
        )
        target.mkdir(parents=True, exist_ok=True)
        for path in files:
            with contextlib.suppress(FileNotFoundError):  # a worker took it meanwhile
                os.replace(path, target / path.name)
        (folder / INDEX_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # unless a late instance is being written
        moved_studies += 1
        moved += len(files)
        audit_record(
            action=AuditAction.QUARANTINE,
            target=folder.name,
            success=False,
            details={"instances": len(files), "quarantine": str(target)},
            message="instances no retrieval asked for were received and set aside",
        )
    return {"studies": moved_studies, "instances": moved, "partial_removed": removed}
