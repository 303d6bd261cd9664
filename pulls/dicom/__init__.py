"""The DICOM engine: plain pynetdicom/pydicom, no Django.

Functions and small classes take a :class:`Peer` (host, port, AE titles,
timeouts) and return dataclasses or raise the typed errors of ``errors``.
"""

from pulls.dicom.client import Session, echo
from pulls.dicom.errors import (
    PacsAborted,
    PacsError,
    PacsRejected,
    PacsStatusError,
    PacsTimeout,
    PacsUnavailable,
)
from pulls.dicom.peer import Peer

__all__ = [
    "PacsAborted",
    "PacsError",
    "PacsRejected",
    "PacsStatusError",
    "PacsTimeout",
    "PacsUnavailable",
    "Peer",
    "Session",
    "echo",
]
