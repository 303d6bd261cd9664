"""Django's SQLite backend, waiting for the write lock in short, even steps.

Writers take SQLite's write lock at BEGIN (``transaction_mode`` IMMEDIATE, see
settings). SQLite's own busy handler waits for a taken lock by sleeping 1, 2,
5, 10, 15, 20, 25 ms and so on, and a lock freed during a sleep goes to
whoever asks first: on two workers, a claim of the next rows behind the other
worker's batch of finished rows (~20 ms) took the lock up to 25 ms after it
was free, or lost it again to the next batch (one claim waited 87 ms). Here a
BEGIN that finds the lock taken is tried again every half millisecond (every
5 ms once it has waited 50 ms), until the connection's ``timeout`` is over;
then it fails with "database is locked", as before. Statements outside a
transaction keep SQLite's busy handler and the same timeout.
"""

from __future__ import annotations

import time

from django.db import OperationalError
from django.db.backends.sqlite3 import base

_STEP = 0.0005
_LONG_STEP = 0.005
_SHORT_FOR = 0.05


class DatabaseWrapper(base.DatabaseWrapper):
    def _start_transaction_under_autocommit(self) -> None:
        begin = "BEGIN" if self.transaction_mode is None else f"BEGIN {self.transaction_mode}"
        timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
        with self.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout = 0")  # a taken lock answers at once
            try:
                started = time.monotonic()
                while True:
                    try:
                        cursor.execute(begin)
                        return
                    except OperationalError as exc:
                        waited = time.monotonic() - started
                        if "locked" not in str(exc) or waited >= timeout:
                            raise
                        time.sleep(_STEP if waited < _SHORT_FOR else _LONG_STEP)
            finally:
                cursor.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
