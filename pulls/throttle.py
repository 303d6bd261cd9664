"""Per-node limits shared by every worker and process, held in Redis (DESIGN §6).

Concurrent associations: a sorted set of holders per node whose scores are
their expiry times, so a worker that dies holding a slot frees it when the
slot expires (it renews the slot with its items' lease while it works).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import redis
from django.conf import settings

from pulls.models import PacsNode

log = logging.getLogger(__name__)

# Drop the expired holders, then take a slot if one is free (atomically).
# Priority: interactive work that found no free slot marks the node (KEYS[2])
# for a few seconds; bulk work takes no slot while the mark is there, so the
# next slot that frees up goes to the interactive work.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local interactive = ARGV[6] == '1'
if not interactive and redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  if interactive then redis.call('DEL', KEYS[2]) end
  return 1
end
if interactive then redis.call('SET', KEYS[2], '1', 'PX', ARGV[7]) end
return 0
"""
# How long interactive work that waits for a slot holds bulk work back: a bit
# more than the interval at which a deferred chunk tries again.
PRIORITY_HOLD_MS = 5000


@functools.cache
def _client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def _key(node: PacsNode) -> str:
    return f"pacsnpull:node:{node.pk}:associations"


@dataclass
class Slot:
    """One of the node's association slots; ``None`` holder means unshared (no Redis)."""

    key: str
    holder: str | None
    ttl: float

    def renew(self) -> None:
        if self.holder is None:
            return
        try:
            _client().zadd(self.key, {self.holder: time.time() + self.ttl}, xx=True)
        except redis.RedisError:
            log.warning("could not renew an association slot: it expires on its own")

    def release(self) -> None:
        if self.holder is None:
            return
        try:
            _client().zrem(self.key, self.holder)
        except redis.RedisError:
            log.warning("could not release an association slot: it expires on its own")


def association_slot(node: PacsNode, *, ttl: float, interactive: bool = False) -> Slot | None:
    """A slot to open one association to ``node``, or None when all are taken
    (or, for bulk work, when interactive work is waiting for the next one).

    Without Redis (the command line on a machine without it) the limit cannot be
    shared; one process opens one association at a time, so it goes ahead.
    """
    key = _key(node)
    holder = uuid.uuid4().hex
    now = time.time()
    try:
        taken = _client().eval(
            _ACQUIRE, 2, key, f"{key}:priority", now, now + ttl, node.max_associations, holder,
            int(ttl * 2) + 60, "1" if interactive else "0", PRIORITY_HOLD_MS,
        )  # fmt: skip
    except redis.RedisError as exc:
        log.warning("Redis unreachable (%s): association limit not shared", type(exc).__name__)
        return Slot(key=key, holder=None, ttl=ttl)
    return Slot(key=key, holder=holder, ttl=ttl) if taken else None


# Deletes the key only if it still holds this worker's token (it may have
# expired and been taken by another worker meanwhile).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@contextlib.contextmanager
def count_ahead_turn(node: PacsNode, job_id: int, *, ttl: float = 30) -> Iterator[bool]:
    """Whether this worker may count the job's next waiting rows ahead now (see
    retrieval.prepare_rows): one worker of the job at a time. The job's workers
    reach their second chunk together, and each counted the same ~50 studies
    ahead (a C-FIND of 10-16 ms on Orthanc each, both transfers stopped); the
    others count their own rows meanwhile. Without Redis: yes."""
    key = f"{_key(node)}:count-ahead:{job_id}"
    holder = uuid.uuid4().hex
    try:
        taken = bool(_client().set(key, holder, nx=True, px=int(ttl * 1000)))
    except redis.RedisError:
        taken, key = True, ""
    try:
        yield taken
    finally:
        if taken and key:
            with contextlib.suppress(redis.RedisError):  # it expires on its own
                _client().eval(_RELEASE, 1, key, holder)


def interactive_waiting(node: PacsNode) -> bool:
    """Whether interactive work is waiting for one of the node's slots (see _ACQUIRE)."""
    try:
        return bool(_client().exists(f"{_key(node)}:priority"))
    except redis.RedisError:
        return False


def slots_in_use(node: PacsNode) -> int:
    try:
        client = _client()
        client.zremrangebyscore(_key(node), "-inf", time.time())
        return int(client.zcard(_key(node)))
    except redis.RedisError:
        return 0


# GCRA (a leaky bucket): the key holds the time the next query may go; each
# query moves it one interval on. No burst: 60/min means one query a second.
_QUERY = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
if tat - now > 0 then return tostring(tat - now) end
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', math.ceil(interval * 1000) + 1000)
return '0'
"""


def _token(key: str, interval: float) -> float:
    try:
        wait = _client().eval(_QUERY, 1, key, time.time(), interval)
    except redis.RedisError:
        return 0.0  # no shared limit without Redis (see association_slot)
    return float(wait)


def query_token(node: PacsNode) -> float:
    """Take the right to send one C-FIND now: 0, or the seconds to wait first."""
    if not node.queries_per_minute:
        return 0.0
    return _token(f"pacsnpull:node:{node.pk}:queries", 60.0 / node.queries_per_minute)


def retrieval_token(node: PacsNode) -> float:
    """Take the right to send one C-MOVE/C-GET now: 0, or the seconds to wait first."""
    if not node.retrievals_per_hour:
        return 0.0
    return _token(f"pacsnpull:node:{node.pk}:retrievals", 3600.0 / node.retrievals_per_hour)


def next_token_in(node: PacsNode, kind: str) -> float | None:
    """Seconds until the node's next query ("queries") or retrieval ("retrievals")
    may go, without taking it; None when Redis cannot say."""
    try:
        tat = _client().get(f"pacsnpull:node:{node.pk}:{kind}")
    except redis.RedisError:
        return None
    return max(0.0, float(tat or 0) - time.time())


def wait_for_query_token(node: PacsNode, *, on_wait=None) -> None:
    """Block until this process may send the node one more C-FIND."""
    while True:
        wait = query_token(node)
        if wait <= 0:
            return
        if on_wait is not None:
            on_wait(wait)
        time.sleep(min(wait, 5.0))
