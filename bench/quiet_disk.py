"""Keep deletions away from timed file creation.

On ext4 without a journal (this project's machine) the kernel skips inodes
freed in the last minute when it allocates one, so for about a minute after an
``rm -r`` of a few thousand files every file creation costs 0.3-0.7 ms of
kernel time instead of 10-30 us. A benchmark that deletes its previous results
right before (or right after, when run again at once) measures that.

The wait covers the kernel's 60 s. While new files keep the freed inodes'
table block dirty it counts them as recent for 360 s (RECENTCY_DIRTY); to
compare the software rather than the disk, run the benchmark with --work on
a tmpfs.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

# A bit more than the kernel's 60 s (ext4 ialloc.c, RECENTCY_MIN).
QUIET_AFTER_DELETE = 65.0


def _stamp(work: Path) -> Path:
    return work.parent / f".{work.name}-deleted-at"


def set_aside(work: Path) -> Path:
    """Move the previous results out of the way, to be deleted after the timing."""
    previous = work.with_name(f".{work.name}-previous")
    discard(previous, work)
    if work.exists():
        work.rename(previous)
    return previous


def discard(previous: Path, work: Path) -> None:
    if previous.exists():
        shutil.rmtree(previous, ignore_errors=True)
        _stamp(work).write_text(str(time.time()))


def wait_for_quiet_disk(work: Path) -> None:
    """Sleep until the last deletion of results is a minute old."""
    try:
        deleted_at = float(_stamp(work).read_text())
    except (OSError, ValueError):
        return
    wait = deleted_at + QUIET_AFTER_DELETE - time.time()
    if wait > 0:
        print(
            f"waiting {wait:.0f} s: files were deleted {QUIET_AFTER_DELETE - wait:.0f} s ago "
            "(see bench/quiet_disk.py)",
            flush=True,
        )
        time.sleep(wait)
