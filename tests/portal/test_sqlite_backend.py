"""portal.sqlite_backend: a writer waiting for SQLite's write lock asks for it
again in short steps, and still gives up after the connection's timeout."""

import sqlite3
import threading
import time
from types import SimpleNamespace

import pytest
from django.db import OperationalError, connections, transaction

from portal.settings import _SQLITE_OPTIONS


@pytest.fixture
def sqlite_alias(tmp_path, django_db_blocker):
    """A connection of the portal's SQLite backend to a database file of its own
    (on the PostgreSQL run as well: the backend is what is tested), outside the
    test database."""
    path = tmp_path / "locks.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE claims (worker TEXT)")
    alias = "sqlite_backend_test"
    connections.settings[alias] = {
        **connections["default"].settings_dict,
        "ENGINE": "portal.sqlite_backend",
        "NAME": str(path),
        "OPTIONS": dict(_SQLITE_OPTIONS, timeout=2),
        "CONN_MAX_AGE": 0,
    }
    try:
        with django_db_blocker.unblock():
            yield alias, path
    finally:
        connections[alias].close()
        del connections[alias]
        del connections.settings[alias]


def _hold_lock(path, release: threading.Event) -> threading.Thread:
    """Another writer holds the write lock until ``release`` is set (at most a
    minute: a test that forgot it fails instead of hanging)."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO claims VALUES ('other')")

    def hold() -> None:
        release.wait(60)
        holder.execute("COMMIT")
        holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    return thread


@pytest.fixture
def waits(monkeypatch):
    """The sleeps the backend takes between two tries of BEGIN (the clock's
    other half, time.monotonic, is left as it is)."""
    from portal.sqlite_backend import base

    taken: list[float] = []

    def sleep(seconds: float) -> None:
        taken.append(seconds)
        time.sleep(seconds)

    monkeypatch.setattr(base, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))
    return taken


def test_a_writer_takes_the_lock_soon_after_another_writer_lets_it_go(sqlite_alias, waits):
    """The writer asks again in short, even steps (never SQLite's own backoff
    of up to 50 ms, nor its busy handler), so it takes the lock within one step
    of its release. How many milliseconds that is on a given machine is a
    benchmark's measure, not a test's; here: the steps, and that it got the lock."""
    alias, path = sqlite_alias
    release = threading.Event()
    holder = _hold_lock(path, release)
    # Let go once the writer has found the lock taken and waited a while (over
    # _SHORT_FOR, so both step lengths are seen).
    threading.Timer(0.14, release.set).start()
    with transaction.atomic(using=alias):
        connections[alias].cursor().execute("INSERT INTO claims VALUES ('this')")
    holder.join()
    assert waits, "the writer never found the lock taken"
    assert max(waits) <= 0.005, sorted(set(waits))
    with sqlite3.connect(path) as db:
        rows = sorted(row[0] for row in db.execute("SELECT worker FROM claims"))
    assert rows == ["other", "this"]


def test_a_writer_gives_up_after_the_timeout_and_its_connection_still_waits(sqlite_alias):
    """The lock is held until the writer has given up: it gave up by itself,
    after its timeout (0.2 s), not because the lock came free."""
    alias, path = sqlite_alias
    connections.settings[alias]["OPTIONS"]["timeout"] = 0.2
    release = threading.Event()
    holder = _hold_lock(path, release)
    started = time.monotonic()
    try:
        with (
            pytest.raises(OperationalError, match="database is locked"),
            transaction.atomic(using=alias),
        ):
            pass
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert waited >= 0.2  # a lower bound only: a busy machine makes it later, never sooner
    with connections[alias].cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 200  # statements outside a transaction wait as before
    with transaction.atomic(using=alias):  # and the next transaction goes through
        connections[alias].cursor().execute("INSERT INTO claims VALUES ('this')")
