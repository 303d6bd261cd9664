"""Stopping a transfer: the progress callback of a C-MOVE, C-GET or WADO-RS
retrieval that cancels it when it stalls, when a user cancels or pauses its
job, or when an operator suspends its node; and what the row then raises."""

from __future__ import annotations

import time

from pulls.dicom.results import Progress
from pulls.models import Job, JobStatus

# JobStopped.status when an operator suspended the node during the transfer.
SUSPENDED = "suspended"


class JobStopped(Exception):
    """The job was cancelled or paused (or its node suspended) during a transfer,
    which was cancelled."""

    def __init__(self, status: str, **counts: int) -> None:
        super().__init__(status)
        self.status = status
        self.counts = counts


class StallGuard:
    """Progress callback of a C-MOVE/C-GET: returning False sends a C-CANCEL.

    Cancels after ``limit`` responses without progress (the prototype's
    query_break_count), when a user cancels or pauses the job, and when an
    operator suspends the node (checked at most every ``check_every`` seconds).
    """

    def __init__(self, limit: int, *, job_id: int | None = None, check_every: float = 0.5):
        self.limit = limit
        self.last = -1
        self.same = 0
        self.tripped = False
        self.job_id = job_id
        self.check_every = check_every
        self.checked = time.monotonic()
        self.stopped_as = ""

    def __call__(self, progress: Progress) -> bool:
        done = progress.completed + progress.failed + progress.warning
        if done == self.last:
            self.same += 1
        else:
            self.last, self.same = done, 0
        if self.limit and self.same >= self.limit:
            self.tripped = True
            return False
        if self.job_id is not None and time.monotonic() - self.checked >= self.check_every:
            self.checked = time.monotonic()
            status, suspended = Job.objects.filter(pk=self.job_id).values_list(
                "status", "node__suspended"
            ).first() or (None, False)
            if status in (JobStatus.CANCELLED, JobStatus.PAUSED):
                self.stopped_as = status
                return False
            if suspended:  # "stops all traffic to the node at once"
                self.stopped_as = SUSPENDED
                return False
        return True
