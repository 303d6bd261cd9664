"""DIMSE status codes by name, and what they mean for a person (PS3.4 C.4, PS3.7 C)."""

from __future__ import annotations

SUCCESS = 0x0000
CANCEL = 0xFE00
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: optional keys not supported
WARNING_SUBOPS = 0xB000  # C-MOVE/C-GET: some sub-operations failed
OUT_OF_RESOURCES = 0xA700
OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE/C-GET: cannot calculate number of matches
OUT_OF_RESOURCES_SUBOPS = 0xA702  # C-MOVE/C-GET: cannot perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_MISMATCH = 0xA900
SOP_CLASS_NOT_SUPPORTED = 0x0122
UNABLE_TO_PROCESS = 0xC000
UNABLE_TO_PROCESS_LAST = 0xCFFF

# status -> (meaning, retryable)
_KNOWN: dict[int, tuple[str, bool]] = {
    CANCEL: ("the operation was cancelled", False),
    WARNING_SUBOPS: ("some instances failed to transfer (sub-operations failed)", True),
    OUT_OF_RESOURCES: ("the PACS is out of resources; it may succeed later", True),
    OUT_OF_RESOURCES_MATCHES: (
        "the PACS is out of resources and could not count the matches; it may succeed later",
        True,
    ),
    OUT_OF_RESOURCES_SUBOPS: (
        "the PACS is out of resources and could not send the instances; it may succeed later",
        True,
    ),
    MOVE_DESTINATION_UNKNOWN: (
        "the PACS does not know the move destination AE title: register it on the PACS "
        "with the portal's host and storage port",
        False,
    ),
    IDENTIFIER_MISMATCH: ("the query does not match what the PACS supports for it", False),
    SOP_CLASS_NOT_SUPPORTED: ("the PACS does not support this query/retrieve model", False),
}


def explain_status(status: int, *, operation: str = "") -> tuple[str, bool]:
    """Return (meaning, retryable) for a failure or warning status of ``operation``
    ("C-FIND", "C-MOVE", "C-GET", "C-STORE"...)."""
    if status in _KNOWN:
        return _KNOWN[status]
    if UNABLE_TO_PROCESS <= status <= UNABLE_TO_PROCESS_LAST:
        if operation == "C-MOVE":
            return (
                "the PACS was unable to process the request (Orthanc also answers this for "
                "an unknown move destination)",
                False,
            )
        if operation == "C-GET":
            # Orthanc answers this when it cannot send an instance on the
            # association: no context for its SOP class, or a syntax it cannot
            # convert ("No presentation context for", "Not implemented yet"),
            # and for a study it does not hold.
            return (
                "the PACS was unable to process the request; a PACS answers this when it "
                "cannot send an instance in any SOP class and transfer syntax the "
                "association offers, or when it does not hold what the C-GET names",
                False,
            )
        return ("the PACS was unable to process the request", False)
    if 0xA900 <= status <= 0xA9FF:
        return ("the identifier does not match the SOP class", False)
    return ("unknown failure status", False)


def is_pending(status: int) -> bool:
    return status in (PENDING, PENDING_WARNING)
