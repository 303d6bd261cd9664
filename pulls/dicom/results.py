"""What a PACS answered to an operation: an echo, a C-MOVE or C-GET (its
sub-operation counts as they come, and in the end). Plain data, shared by
the DIMSE client, the DICOMweb session and the completeness checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class EchoResult:
    status: int
    seconds: float


@dataclass
class Progress:
    """Sub-operation counts of one C-MOVE/C-GET response (PS3.4 C.4.2.1.4)."""

    remaining: int | None = None
    completed: int = 0
    failed: int = 0
    warning: int = 0
    responses: int = 0


@dataclass
class RetrieveResult:
    """What the PACS said about a C-MOVE or C-GET; see ``completeness`` for what arrived."""

    status: int
    completed: int
    failed: int
    warning: int
    failed_sop_uids: list[str]
    responses: int
    seconds: float
    cancelled: bool = False
    # C-GET: instances that arrived and were answered, but could not be written
    # here (see receiving.InstanceWriter.answers_first); whether for want of space.
    unwritten: int = 0
    no_space: bool = False
    # What else is known of a failure (getting.get_as_stored: which SOP classes,
    # which transfer syntaxes were asked for), for the person reading the row.
    note: str = ""

    @property
    def reported(self) -> int:
        return self.completed + self.failed + self.warning


ProgressCallback = Callable[[Progress], bool | None]
