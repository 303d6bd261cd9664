"""Free space: a retrieval does not start, and a job pauses, on a full disk."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings

from pulls.models import Project


class DiskFull(Exception):
    """The project's storage (or the staging area) is full: the job pauses."""


def free_bytes(path: Path) -> int:
    """Free space of the file system holding ``path`` (or its nearest existing parent)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def check_free_space(project: Project, *, then: str = "resume the job") -> int:
    """DiskFull when the project's disk or the staging area's has less than
    PACSNPULL_MIN_FREE_BYTES free; its message ends with what to do ``then``.
    Else the free bytes of the fuller of the two."""
    minimum = settings.PACSNPULL_MIN_FREE_BYTES
    found = []
    for path in (project.storage_dir, settings.PACSNPULL_STAGING_DIR):
        free = free_bytes(path)
        if free < minimum:
            raise DiskFull(
                f"only {free / 1e6:.1f} MB free on the disk of {path}; at least "
                f"{minimum / 1e6:.0f} MB are needed: free some space, then {then}"
            )
        found.append(free)
    return min(found)
