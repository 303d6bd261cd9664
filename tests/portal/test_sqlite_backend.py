"""portal.sqlite_backend: a writer waiting for SQLite's write lock takes it
soon after it is free, and still gives up after the connection's timeout."""

import sqlite3
import threading
import time

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


def _hold_lock(path, seconds: float, released: list[float]) -> threading.Thread:
    """Another writer holds the write lock for ``seconds``; notes when it let go."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO claims VALUES ('other')")

    def release() -> None:
        time.sleep(seconds)
        holder.execute("COMMIT")
        released.append(time.monotonic())
        holder.close()

    thread = threading.Thread(target=release)
    thread.start()
    return thread


def test_a_writer_takes_the_lock_soon_after_another_writer_lets_it_go(sqlite_alias):
    alias, path = sqlite_alias
    released: list[float] = []
    # 140 ms: SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20, 25, 25, 25
    # and 50 ms, so it would ask again only 178 ms in, 38 ms after the release.
    holder = _hold_lock(path, 0.14, released)
    with transaction.atomic(using=alias):
        taken = time.monotonic()
        connections[alias].cursor().execute("INSERT INTO claims VALUES ('this')")
    holder.join()
    late = taken - released[0]
    # Ours asks every 5 ms by then; 30 ms leaves room for a busy machine's scheduling.
    assert late < 0.03, f"the lock was taken {late * 1000:.0f} ms after it was free"
    with sqlite3.connect(path) as db:
        rows = sorted(row[0] for row in db.execute("SELECT worker FROM claims"))
    assert rows == ["other", "this"]


def test_a_writer_gives_up_after_the_timeout_and_its_connection_still_waits(sqlite_alias):
    alias, path = sqlite_alias
    connections.settings[alias]["OPTIONS"]["timeout"] = 0.2
    released: list[float] = []
    holder = _hold_lock(path, 0.6, released)
    started = time.monotonic()
    with (
        pytest.raises(OperationalError, match="database is locked"),
        transaction.atomic(using=alias),
    ):
        pass
    waited = time.monotonic() - started
    holder.join()
    assert 0.2 <= waited < 0.5
    with connections[alias].cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        assert cursor.fetchone()[0] == 200  # statements outside a transaction wait as before
    with transaction.atomic(using=alias):  # and the next transaction goes through
        connections[alias].cursor().execute("INSERT INTO claims VALUES ('this')")
