"""Did everything arrive? Counted, never taken from the final status alone.

PACS are seen to report success with failed sub-operations, or success before
all C-STOREs arrived. The expected count comes from the PACS's own index
(NumberOfStudyRelatedInstances, or an image-level C-FIND); the received count
from what is on disk.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass

from pulls.dicom.results import RetrieveResult


class Verdict(enum.StrEnum):
    COMPLETE = "complete"
    FAILED_SUBOPERATIONS = "failed_suboperations"
    MISSING = "missing"  # the PACS said success, yet instances are missing
    UNWRITTEN = "unwritten"  # arrived, but could not be written here
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Completeness:
    verdict: Verdict
    expected: int | None
    received: int
    completed: int
    failed: int
    warning: int
    late: int  # arrived after the final response, within the wait
    message: str

    @property
    def is_complete(self) -> bool:
        return self.verdict is Verdict.COMPLETE


def wait_for_arrivals(
    count: Callable[[], int],
    *,
    target: int,
    idle_timeout: float,
    poll: float = 0.1,
) -> int:
    """Wait until ``count()`` reaches ``target`` or nothing new arrived for ``idle_timeout``."""
    last = count()
    last_change = time.monotonic()
    while last < target:
        time.sleep(poll)
        now = count()
        if now != last:
            last, last_change = now, time.monotonic()
        elif time.monotonic() - last_change >= idle_timeout:
            break
    return last


def assess(
    result: RetrieveResult,
    *,
    expected: int | None,
    count_received: Callable[[], int],
    idle_timeout: float = 5.0,
) -> Completeness:
    """Compare what the PACS reported and what it should have sent with what arrived.

    ``expected`` is None when the PACS could not say; the sub-operation counts
    are then the best estimate, and missing instances are still detected
    against them.
    """
    at_final = count_received()
    target = expected if expected is not None else result.completed + result.warning
    received = wait_for_arrivals(count_received, target=target, idle_timeout=idle_timeout)
    late = max(0, received - at_final)
    base = dict(
        expected=expected,
        received=received,
        completed=result.completed,
        failed=result.failed,
        warning=result.warning,
        late=late,
    )
    if result.cancelled:
        return Completeness(
            verdict=Verdict.CANCELLED,
            message=f"cancelled after {received} of {_of(expected, target)} instances",
            **base,
        )
    if result.unwritten:
        return Completeness(
            verdict=Verdict.UNWRITTEN,
            message=(
                f"{result.unwritten} instance(s) arrived but could not be written here "
                f"(the worker's log says why); {received} of {_of(expected, target)} arrived"
            ),
            **base,
        )
    if result.failed:
        return Completeness(
            verdict=Verdict.FAILED_SUBOPERATIONS,
            message=(
                f"the PACS failed {result.failed} C-STORE sub-operation(s): instances it "
                f"could not send to us{_said_why(result)}; "
                f"{received} of {_of(expected, target)} arrived"
            ),
            **base,
        )
    if received < target:
        said = "success" if result.status == 0 else f"status 0x{result.status:04X}"
        return Completeness(
            verdict=Verdict.MISSING,
            message=(
                f"the PACS reported {said} with {result.completed} sent, but only "
                f"{received} of {_of(expected, target)} instances arrived"
                + (f" ({result.note})" if result.note else "")
            ),
            **base,
        )
    note = f" ({late} after the final response)" if late else ""
    return Completeness(
        verdict=Verdict.COMPLETE, message=f"all {received} instances arrived{note}", **base
    )


def _said_why(result: RetrieveResult) -> str:
    if result.note:
        return f" ({result.note})"
    # The PACS's log says which; a transfer syntax it cannot convert to one the
    # receiver accepts, or a SOP class it was not offered, are the usual reasons.
    return (
        " (usually a transfer syntax it cannot convert to one the receiver accepts, or a "
        "SOP class the receiver was not offered; the PACS's log names it)"
    )


def _of(expected: int | None, target: int) -> str:
    return str(expected) if expected is not None else f"{target} reported"
