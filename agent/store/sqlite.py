"""The store's SQLite connections: the pragmas every part of the kit relies on, the page size
(what each commit writes to the card), and the checks at open."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("agent.store")

PAGE_SIZE = 1024
"""The store's page size. A commit writes every page it touched, whole, to the write-ahead
log, and a sale touches about 15 (a leaf of each table and index it adds to): at SQLite's
default of 4096 bytes that is 60 KB per sale to an SD card, at 1024 a quarter (docs/store.md)."""
CHECKPOINT_PAGES = 4000
"""The write-ahead log is checkpointed once it holds this many pages (4 MB at 1024 bytes, the
size SQLite's default of 1000 pages of 4096 gave): a page written by many commits meanwhile is
copied into the database once."""
WAL_LIMIT_BYTES = 8 * 1024 * 1024
"""A log grown past this by one large transaction is cut back to it after its checkpoint; a
log of the usual size is reused in place (rewritten, never cut and grown again)."""
CONVERT_MAX_BYTES = 16 * 1024 * 1024
"""An older store with larger pages is rewritten with :data:`PAGE_SIZE` at open (``VACUUM``)
when it is at most this big: a second or so on a Pi; a bigger one keeps its pages rather than
hold the start."""


def connect(path: str | Path, page_size: int | None = None) -> sqlite3.Connection:
    """A connection with the pragmas every part of the kit relies on; ``page_size`` is the
    page size a new database gets (it must come before WAL mode)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    if page_size is not None:
        db.execute(f"PRAGMA page_size={int(page_size)}")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    # A transaction's statement and savepoint journals stay in memory (SQLite's default puts
    # the larger ones in files under /var/tmp, on the same card); they only ever undo part of
    # a transaction not yet committed, so durability is untouched.
    db.execute("PRAGMA temp_store=MEMORY")
    # Deleted rows are zeroed on the pages written anyway, not by writing the freed pages too.
    db.execute("PRAGMA secure_delete=FAST")
    db.row_factory = sqlite3.Row
    return db


def use_page_size(db: sqlite3.Connection, path: Path) -> None:
    """Rewrite an older store with :data:`PAGE_SIZE` pages when it is small enough (see
    :data:`CONVERT_MAX_BYTES`). ``VACUUM`` in rollback-journal mode: a power cut during it
    leaves the database as it was. Nothing else may have the database open."""
    current = db.execute("PRAGMA page_size").fetchone()[0]
    if current == PAGE_SIZE:
        return
    if path.stat().st_size > CONVERT_MAX_BYTES:
        log.info("store %s keeps its %d-byte pages (larger than %d MB: rewriting it would "
                 "hold the start)", path, current, CONVERT_MAX_BYTES // 2**20)
        return
    try:
        db.execute("PRAGMA journal_mode=DELETE")  # the page size changes only outside WAL
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")
        db.execute("VACUUM")
        log.info("store %s rewritten with %d-byte pages (it had %d)", path, PAGE_SIZE, current)
    except sqlite3.OperationalError as exc:  # no room for the copy, or someone reads it
        log.warning("store %s keeps its %d-byte pages: %s", path, current, exc)
    finally:
        db.execute("PRAGMA journal_mode=WAL")


def quick_check(db: sqlite3.Connection) -> str:
    """Empty when ``PRAGMA quick_check`` finds the database whole, else its first complaint."""
    rows = [row[0] for row in db.execute("PRAGMA quick_check(10)")]
    if rows == ["ok"]:
        return ""
    more = f" and {len(rows) - 1} more problem(s)" if len(rows) > 1 else ""
    return f"{rows[0]}{more}"
