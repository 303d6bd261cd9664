"""What the dashboard shows about the machinery: nodes, workers, storage.

Workers say they are alive by writing a key in Redis every few seconds from a
thread of their main process; a worker that stops writing drops off the list
when its key expires.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from celery.signals import worker_ready
from django.conf import settings
from django.utils import timezone

from pulls.limits import throttle
from pulls.limits import windows as windows_lib
from pulls.models import PacsNode

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10
_PREFIX = "pacsnpull:worker:"


def heartbeat_write(name: str, queues: list[str], concurrency: int) -> None:
    value = json.dumps({"queues": queues, "concurrency": concurrency, "at": time.time()})
    throttle._client().set(f"{_PREFIX}{name}", value, ex=HEARTBEAT_SECONDS * 3)


@worker_ready.connect(dispatch_uid="pacsnpull_worker_heartbeat")
def _start_heartbeat(sender=None, **kwargs) -> None:
    name = getattr(sender, "hostname", None) or socket.gethostname()
    try:
        queues = sorted(q.name for q in sender.app.amqp.queues.consume_from.values())
    except AttributeError:
        queues = []
    concurrency = getattr(getattr(sender, "controller", None), "concurrency", 0) or 0

    def beat() -> None:
        while True:
            try:
                heartbeat_write(name, queues, concurrency)
            except redis.RedisError:
                log.warning("could not write the worker heartbeat to Redis")
            time.sleep(HEARTBEAT_SECONDS)

    threading.Thread(target=beat, name="pacsnpull-heartbeat", daemon=True).start()


@dataclass
class WorkerState:
    name: str
    queues: list[str]
    concurrency: int
    seconds_ago: float


def workers_alive() -> list[WorkerState] | None:
    """Workers seen in the last half minute; None when Redis cannot be reached."""
    client = throttle._client()
    try:
        keys = sorted(client.scan_iter(match=f"{_PREFIX}*", count=100))
        values = client.mget(keys) if keys else []
    except redis.RedisError:
        return None
    now = time.time()
    states = []
    for key, value in zip(keys, values, strict=True):
        if value is None:
            continue
        data = json.loads(value)
        states.append(
            WorkerState(
                name=key.decode()[len(_PREFIX) :],
                queues=data.get("queues", []),
                concurrency=data.get("concurrency", 0),
                seconds_ago=max(0.0, now - data.get("at", now)),
            )
        )
    return states


@dataclass
class StorageState:
    label: str
    path: Path
    free: int
    total: int

    @property
    def low(self) -> bool:
        return self.free < settings.PACSNPULL_MIN_FREE_BYTES


def storage_state() -> list[StorageState]:
    states = []
    for label, path in (
        ("Project storage", settings.PACSNPULL_STORAGE_ROOT),
        ("Staging (C-MOVE arrivals)", settings.PACSNPULL_STAGING_DIR),
    ):
        probe = Path(path)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        usage = shutil.disk_usage(probe)
        states.append(
            StorageState(label=label, path=Path(path), free=usage.free, total=usage.total)
        )
    return states


@dataclass
class NodeHealth:
    node: PacsNode
    slots_in_use: int
    window: str
    window_open: bool
    next_query_in: float | None
    next_retrieval_in: float | None


def node_health(node: PacsNode) -> NodeHealth:
    windows = node.windows
    is_open = windows_lib.window_open(windows)
    if not windows:
        window = "any time"
    elif is_open:
        closes = windows_lib.window_closes(windows)
        window = f"open until {windows_lib.window_describe(closes)}" if closes else "open"
    else:
        opening = windows_lib.window_next_opening(windows)
        window = f"closed, opens at {windows_lib.window_describe(opening)}"
    return NodeHealth(
        node=node,
        slots_in_use=throttle.slots_in_use(node),
        window=window,
        window_open=is_open,
        next_query_in=throttle.next_token_in(node, "queries") if node.queries_per_minute else 0,
        next_retrieval_in=(
            throttle.next_token_in(node, "retrievals") if node.retrievals_per_hour else 0
        ),
    )


def now_local() -> str:
    return f"{timezone.localtime():%H:%M} ({settings.TIME_ZONE})"
