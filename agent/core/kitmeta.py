"""What the kit keeps about itself beside the sales, in the ``meta`` table: the staff latch,
the shutdown it committed to (so a restart does not sell on a critical battery), and the probe
the storage watch writes to learn whether a full disk has room again.

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:")
    >>> _ = db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    >>> read_latch(db)
    False
    >>> write_latch(db, True); read_latch(db)
    True
    >>> read_shutdown_intent(db) is None
    True
    >>> write_shutdown_intent(db, "battery_critical", "2026-11-28T16:00:00+00:00")
    >>> read_shutdown_intent(db)
    {'reason': 'battery_critical', 'at': '2026-11-28T16:00:00+00:00'}
    >>> clear_shutdown_intent(db); read_shutdown_intent(db) is None
    True
"""

from __future__ import annotations

import json
import sqlite3

LATCH_KEY = "staff_latch"
SHUTDOWN_KEY = "shutdown_intent"
PROBE_KEY = "storage_probe"
PROBE_BYTES = 48 * 1024
"""At least what one sale adds to the write-ahead log (its rows and index pages: about 20 KB
with the store's 1 KB pages, more for a sale of many lines), so a probe that fits means a sale
fits: a smaller probe could end the alert while every order is still refused."""


def read_latch(db: sqlite3.Connection) -> bool:
    """Whether staff hold the kit offline (the panel's offline button or the staff page)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (LATCH_KEY,)).fetchone()
    return row is not None and row[0] == "1"


def write_latch(db: sqlite3.Connection, latched: bool) -> None:
    _write(db, LATCH_KEY, "1" if latched else "0")


def _write(db: sqlite3.Connection, key: str, value: str) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))


def read_shutdown_intent(db: sqlite3.Connection) -> dict[str, str] | None:
    """The shutdown the kit committed to and has not yet seen through; None without one."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (SHUTDOWN_KEY,)).fetchone()
    return None if row is None else json.loads(row[0])


def write_shutdown_intent(db: sqlite3.Connection, reason: str, at: str) -> None:
    """The kit is shutting down (``reason``, at ``at``): kept until cleared."""
    _write(db, SHUTDOWN_KEY, json.dumps({"reason": reason, "at": at}))


def clear_shutdown_intent(db: sqlite3.Connection) -> None:
    """The shutdown no longer holds (the battery recovered, or mains is back for good)."""
    db.execute("DELETE FROM meta WHERE key = ?", (SHUTDOWN_KEY,))


def write_probe(db: sqlite3.Connection, now: str) -> None:
    """A real write the size of a sale, to learn whether a full disk has room again; the room
    it took is given back at once by :func:`clear_probe`."""
    _write(db, PROBE_KEY, now.ljust(PROBE_BYTES, "."))


def clear_probe(db: sqlite3.Connection, now: str) -> None:
    db.execute("UPDATE meta SET value = ? WHERE key = ?", (now, PROBE_KEY))
