"""Typed errors of the DICOM engine, each with a message a person can act on."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pydicom.datadict import keyword_for_tag

from pulls.dicom.statuses import explain_status

if TYPE_CHECKING:
    from pulls.dicom.peer import Peer


class PacsError(Exception):
    """Something went wrong talking to a PACS."""

    #: Whether trying again later may succeed (network trouble, busy PACS).
    retryable = True


class PacsUnavailable(PacsError):
    """No TCP connection could be made (refused, unreachable, connect timeout)."""


class PacsTimeout(PacsError):
    """The PACS stopped answering within the configured timeout."""


class PacsAborted(PacsError):
    """The association was aborted (by the PACS or by the network)."""


class PacsRejected(PacsError):
    """The PACS rejected the association request."""

    def __init__(self, message: str, *, result: int, source: int, reason: int) -> None:
        super().__init__(message)
        self.result = result
        self.source = source
        self.reason = reason
        # 0x02 is "rejected (transient)": congestion or a local limit.
        self.retryable = result == 0x02


class PacsStatusError(PacsError):
    """A DIMSE operation ended with a failure status."""

    def __init__(
        self,
        operation: str,
        status: int,
        *,
        comment: str = "",
        offending: tuple[int, ...] = (),
    ) -> None:
        self.operation = operation
        self.status = status
        self.comment = comment
        self.offending = offending
        meaning, self.retryable = explain_status(status, operation=operation)
        text = f"{operation} failed with status 0x{status:04X}: {meaning}"
        if offending:
            text += f"; offending element {', '.join(map(_tag_name, offending))}"
        if comment:
            text += f" (PACS says: {comment})"
        super().__init__(text)


def _tag_name(tag: int) -> str:
    keyword = keyword_for_tag(tag)
    text = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return f"{keyword} {text}" if keyword else text


def rejection_error(peer: Peer, rsp: object) -> PacsRejected:
    """A PacsRejected from an A-ASSOCIATE-RJ primitive, with what to do about it."""
    hint = ""
    if rsp.result_source == 1 and rsp.diagnostic == 3:
        hint = f": register the calling AE title {peer.calling_ae!r} on the PACS"
    elif rsp.result_source == 1 and rsp.diagnostic == 7:
        hint = f": the PACS is not called {peer.called_ae!r}; check the node's AE title"
    elif rsp.result_source == 3:
        hint = ": the PACS is busy; try again later"
    return PacsRejected(
        f"{peer.describe()} rejected the association ({rsp.result_str}, "
        f"{rsp.source_str}): {rsp.reason_str}{hint}",
        result=rsp.result,
        source=rsp.result_source,
        reason=rsp.diagnostic,
    )


def error_details(fields: dict[int, object]) -> dict[str, object]:
    """What a failure response says beyond its status (PS3.7 C): Error Comment
    and Offending Element, when the PACS sends them."""
    offending = fields.get(0x0901, b"")
    tags = []
    if isinstance(offending, bytes | bytearray):
        for at in range(0, len(offending) - 3, 4):
            group, element = struct.unpack_from("<HH", offending, at)
            tags.append(group << 16 | element)
    return {"comment": str(fields.get(0x0902, "") or ""), "offending": tuple(tags)}
