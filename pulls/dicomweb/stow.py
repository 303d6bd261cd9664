"""Sending files to a DICOMweb destination by STOW-RS (PS3.18 10.5): each
study's files as they are stored (no decoding, no conversion), in requests of
at most ``BATCH_FILES`` files or ``BATCH_BYTES`` bytes, and what the server
says it refused, instance by instance (FailedSOPSequence)."""

from __future__ import annotations

import uuid
from pathlib import Path

from pulls.dicom.sending import Outcome, SendResult, read_meta
from pulls.dicomweb.session import WebSession, refusal
from pulls.models import PacsNode

BATCH_FILES = 100
BATCH_BYTES = 64 << 20
_FAILED_SOPS, _SOP_INSTANCE, _FAILURE_REASON = "00081198", "00081155", "00081197"


def _batches(paths: list[Path]) -> list[list[Path]]:
    batches: list[list[Path]] = [[]]
    size = 0
    for path in paths:
        length = path.stat().st_size
        if batches[-1] and (len(batches[-1]) >= BATCH_FILES or size + length > BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(path)
        size += length
    return [batch for batch in batches if batch]


def _failures(answer: object) -> dict[str, int | None]:
    """SOP Instance UID -> failure reason, from a STOW-RS answer (DICOM JSON)."""
    if not isinstance(answer, dict):
        return {}
    failed: dict[str, int | None] = {}
    for item in (answer.get(_FAILED_SOPS) or {}).get("Value") or []:
        uid = ((item.get(_SOP_INSTANCE) or {}).get("Value") or [""])[0]
        reason = ((item.get(_FAILURE_REASON) or {}).get("Value") or [None])[0]
        if uid:
            failed[str(uid)] = int(reason) if isinstance(reason, int) else None
    return failed


def stow_files(node: PacsNode, paths: list[Path]) -> SendResult:
    """Store the files at the node by STOW-RS; what went and what did not."""
    result = SendResult()
    with WebSession(node) as session:
        url = f"{session.root('stow')}/studies"
        for batch in _batches(paths):
            boundary = uuid.uuid4().hex
            parts, sizes = [], {}
            for path in batch:
                data = path.read_bytes()
                sizes[read_meta(path).sop_instance] = len(data)
                parts += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), data]
                parts.append(b"\r\n")
            parts.append(f"--{boundary}--\r\n".encode())
            headers = {
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json",
            }

            def post(body: bytes = b"".join(parts), headers: dict = headers):
                response = session.http.post(
                    url, data=body, headers=headers,
                    timeout=(node.connect_timeout, node.network_timeout),
                )  # fmt: skip
                if response.status_code == 409:  # every instance refused: they say why
                    return response
                response.raise_for_status()
                return response

            response = session.call("STOW-RS store", post)
            try:
                answer = response.json() if response.content else {}
            except ValueError:
                answer = {}
            failed = _failures(answer)
            if response.status_code == 409 and not failed:
                raise refusal(node, "STOW-RS store", response)
            for uid, size in sizes.items():
                if uid in failed or response.status_code == 409:
                    result.failed.append(
                        Outcome(uid, failed.get(uid), "refused by the server (STOW-RS)")
                    )
                else:
                    result.sent += 1
                    result.bytes += size
    return result
