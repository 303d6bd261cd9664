"""Where a PACS is and how to talk to it: what every association starts from."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peer:
    """Where a PACS is and how to talk to it."""

    host: str
    port: int
    called_ae: str
    calling_ae: str
    connect_timeout: float = 10  # TCP connect
    acse_timeout: float = 30  # answer to the association request
    dimse_timeout: float = 60  # answer to a C-ECHO / each C-FIND response
    network_timeout: float = 120  # silence between the sub-operations of a C-MOVE / C-GET

    def describe(self) -> str:
        return f"{self.called_ae}@{self.host}:{self.port}"
