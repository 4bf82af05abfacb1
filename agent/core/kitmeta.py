"""What the kit keeps about itself beside the sales, in the ``meta`` table: the staff latch, and
the probe the storage watch writes to learn whether a full disk has room again.

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:")
    >>> _ = db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    >>> read_latch(db)
    False
    >>> write_latch(db, True); read_latch(db)
    True
"""

from __future__ import annotations

import sqlite3

LATCH_KEY = "staff_latch"


def read_latch(db: sqlite3.Connection) -> bool:
    """Whether staff hold the kit offline (the panel's offline button or the staff page)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (LATCH_KEY,)).fetchone()
    return row is not None and row[0] == "1"


def write_latch(db: sqlite3.Connection, latched: bool) -> None:
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               (LATCH_KEY, "1" if latched else "0"))


PROBE_KEY = "storage_probe"


PROBE_BYTES = 48 * 1024
"""About what one sale adds to the write-ahead log (its rows and index pages), so a probe that
fits means a sale fits: a smaller probe could end the alert while every order is still refused."""


def write_probe(db: sqlite3.Connection, now: str) -> None:
    """A real write the size of a sale, to learn whether a full disk has room again; the room
    it took is given back at once by :func:`clear_probe`."""
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               (PROBE_KEY, now.ljust(PROBE_BYTES, ".")))


def clear_probe(db: sqlite3.Connection, now: str) -> None:
    db.execute("UPDATE meta SET value = ? WHERE key = ?", (now, PROBE_KEY))
