"""`move --send-to AET@HOST:PORT`: the retrieved studies sent on, run here."""

from __future__ import annotations

import re
import time
from typing import Any

from pulls.delivery.sending import sending_create, sending_run
from pulls.models import Job, PacsNode, SendingStatus

_TARGET = re.compile(r"(?P<aet>[^@\\\\]{1,16})@(?P<host>[A-Za-z0-9.\-:\[\]]+):(?P<port>\d{1,5})")


def parse_send_to(text: str) -> tuple[str, str, int]:
    """AET@HOST:PORT, checked; ValueError saying what is wrong and how to write it."""
    match = _TARGET.fullmatch(text.strip())
    if not match or not 0 < int(match["port"]) < 65536 or not match["aet"].strip():
        raise ValueError(
            f"--send-to {text!r}: write it as AET@HOST:PORT, for example "
            "RESEARCH@10.0.0.5:104 (an AE title of at most 16 characters, a port 1-65535)"
        )
    return match["aet"].strip(), match["host"].strip("[]"), int(match["port"])


def _node(owner: Any, aet: str, host: str, port: int) -> PacsNode:
    node, _ = PacsNode.objects.get_or_create(
        name=f"cli-send {aet}@{host}:{port}"[:64],
        defaults={"ae_title": aet, "host": host, "port": port, "is_destination": True},
    )
    node.granted_users.add(owner)
    return node


def send_inline(job: Job, owner: Any, target: tuple[str, str, int]) -> tuple[str, str]:
    """Send the job's studies now; (summary, failures or "")."""
    node = _node(owner, *target)
    sending = sending_create(project=job.project, destination=node, user=owner, job=job)
    while (wait := sending_run(sending.pk)) is not None:
        time.sleep(min(wait.seconds, 5))
    studies = list(sending.studies.order_by("pk"))
    done = [s for s in studies if s.status == SendingStatus.DONE]
    summary = (
        f"{len(done)} of {len(studies)} studies sent to {node.ae_title}@{node.host}:{node.port} "
        f"({sum(s.instances_sent for s in studies)} instances)"
    )
    failures = "\n".join(
        f"  study {s.study_instance_uid}: {s.message or 'not sent'}"
        for s in studies
        if s.status != SendingStatus.DONE
    )
    return summary, (f"{summary}; these did not arrive:\n{failures}" if failures else "")
