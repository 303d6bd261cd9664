"""Per-node limits shared by every worker and process, held in Redis (DESIGN §6).

Concurrent associations: a sorted set of holders per node whose scores are
their expiry times, so a worker that dies holding a slot frees it when the
slot expires (it renews the slot with its items' lease while it works).

Queries per minute and retrievals per hour: a time per node (GCRA) from which
each taker reserves the next slot, so takers go in the order they asked.

Without Redis (the command line on a machine where no portal runs) the same
limits are held in this process (``_Local``): they hold for what it sends,
and nothing else can be sending through it. ``where_limits_are`` says which.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

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


class _Local:
    """The limits in this process, where Redis cannot be reached: the same
    rules (slots that expire, GCRA times), under a lock for its threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.slots: dict[str, dict[str, float]] = {}  # key -> holder -> expiry
        self.times: dict[str, float] = {}  # key -> the next slot's time (GCRA)
        self.warned = False

    def acquire(self, key: str, holder: str, *, limit: int, ttl: float) -> bool:
        now = time.time()
        with self.lock:
            held = {h: t for h, t in self.slots.get(key, {}).items() if t > now}
            self.slots[key] = held
            if limit and len(held) >= limit:
                return False
            held[holder] = now + ttl
            return True

    def renew(self, key: str, holder: str, ttl: float) -> None:
        with self.lock:
            if holder in self.slots.get(key, {}):
                self.slots[key][holder] = time.time() + ttl

    def release(self, key: str, holder: str) -> None:
        with self.lock:
            self.slots.get(key, {}).pop(holder, None)

    def in_use(self, key: str) -> int:
        now = time.time()
        with self.lock:
            return sum(1 for t in self.slots.get(key, {}).values() if t > now)

    def take(self, key: str, interval: float, horizon: float) -> tuple[bool, float]:
        now = time.time()
        with self.lock:
            tat = max(self.times.get(key, 0.0), now)
            wait = tat - now
            if wait > horizon:
                return False, wait
            self.times[key] = tat + interval
            return True, wait


_LOCAL = _Local()


def _unreachable(exc: Exception) -> None:
    if not _LOCAL.warned:
        _LOCAL.warned = True
        log.warning(
            "Redis unreachable (%s): this process holds the node limits itself", type(exc).__name__
        )


def where_limits_are() -> str:
    """Where this process's node limits are held, in words (the command line
    says it when it starts)."""
    try:
        _client().ping()
    except redis.RedisError:
        return (
            "held in this process: no Redis answers at REDIS_URL, so they apply to what this "
            "command sends (a portal's workers, if any, do not see them)"
        )
    return "shared through Redis with every worker of the portal that uses it"


def _key(node: PacsNode) -> str:
    return f"pacsnpull:node:{node.pk}:associations"


@dataclass
class Slot:
    """One of the node's association slots; ``local``: held in this process (no Redis)."""

    key: str
    holder: str
    ttl: float
    local: bool = False

    def renew(self) -> None:
        if self.local:
            _LOCAL.renew(self.key, self.holder, self.ttl)
            return
        try:
            _client().zadd(self.key, {self.holder: time.time() + self.ttl}, xx=True)
        except redis.RedisError:
            log.warning("could not renew an association slot: it expires on its own")

    def release(self) -> None:
        if self.local:
            _LOCAL.release(self.key, self.holder)
            return
        try:
            _client().zrem(self.key, self.holder)
        except redis.RedisError:
            log.warning("could not release an association slot: it expires on its own")


def association_slot(node: PacsNode, *, ttl: float, interactive: bool = False) -> Slot | None:
    """A slot to open one association to ``node``, or None when all are taken
    (or, for bulk work, when interactive work is waiting for the next one).

    Without Redis (the command line on a machine without it) the limit is held
    in this process (``_Local``).
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
        _unreachable(exc)
        if not _LOCAL.acquire(key, holder, limit=node.max_associations, ttl=ttl):
            return None
        return Slot(key=key, holder=holder, ttl=ttl, local=True)
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
        return _LOCAL.in_use(_key(node))


# GCRA (a leaky bucket): the key holds the time the next query may go. No
# burst: 60/min means one query a second. A taker takes the slot it finds, now
# or later, and moves the key one interval on: whoever asks first goes first.
# (Asking again after a wait instead let a worker lose the race for the slot
# over and over to another one that asked later: one of a job's two workers
# waited 3 s for a query at 120 a minute while the other sent five.) A slot
# further away than ``horizon`` is not taken: the taker is only told the wait.
_TAKE = """
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local horizon = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - now
if wait > horizon then return {0, tostring(wait)} end
local ttl = math.ceil((wait + interval) * 1000) + 1000
redis.call('SET', KEYS[1], tostring(tat + interval), 'PX', ttl)
return {1, tostring(wait)}
"""

# Queries wait for their slot however far it is: their callers always do.
_ANY_WAIT = 1e9


class Token(NamedTuple):
    """The right to send one request to a node, or not yet."""

    taken: bool  # the slot is this caller's: it sends after ``wait``
    wait: float  # seconds until the taken slot, or until one may be asked for


_FREE = Token(True, 0.0)


def _token(key: str, interval: float, horizon: float) -> Token:
    try:
        taken, wait = _client().eval(_TAKE, 1, key, time.time(), interval, horizon)
    except redis.RedisError as exc:
        _unreachable(exc)
        return Token(*_LOCAL.take(key, interval, horizon))
    return Token(bool(int(taken)), float(wait))


def query_token(node: PacsNode) -> Token:
    """Take the node's next slot for one C-FIND (taken: send it after ``wait``)."""
    if not node.queries_per_minute:
        return _FREE
    key = f"pacsnpull:node:{node.pk}:queries"
    return _token(key, 60.0 / node.queries_per_minute, _ANY_WAIT)


def retrieval_token(node: PacsNode, *, horizon: float) -> Token:
    """Take the node's next slot for one C-MOVE/C-GET if it is at most ``horizon``
    seconds away; else (not taken) how long until it is."""
    if not node.retrievals_per_hour:
        return _FREE
    key = f"pacsnpull:node:{node.pk}:retrievals"
    return _token(key, 3600.0 / node.retrievals_per_hour, horizon)


def next_token_in(node: PacsNode, kind: str) -> float | None:
    """Seconds until the node's next query ("queries") or retrieval ("retrievals")
    may go, without taking it; None when Redis cannot say."""
    try:
        tat = _client().get(f"pacsnpull:node:{node.pk}:{kind}")
    except redis.RedisError:
        return None
    return max(0.0, float(tat or 0) - time.time())


def wait_for_query_token(node: PacsNode, *, on_wait=None) -> None:
    """Block until this process may send the node one more C-FIND (its slot)."""
    wait = query_token(node).wait
    if wait > 0:
        if on_wait is not None:
            on_wait(wait)
        time.sleep(wait)
