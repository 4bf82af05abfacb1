"""The kit's SQLite store: one writer thread with group commit, one reader thread.

Every change is a function of a :class:`sqlite3.Connection` handed to :meth:`Store.write`. The
writer thread runs the functions that are waiting in one transaction, each inside its own
savepoint (a function that raises rolls back only its own changes), commits once with
``synchronous=FULL`` and only then answers each caller. So an answer always means durable, and
under load many orders share one fsync (group commit).

    >>> import asyncio, tempfile, os
    >>> store = Store(os.path.join(tempfile.mkdtemp(), "kit.db")); store.open()
    >>> asyncio.run(store.write(lambda db: db.execute("SELECT 1").fetchone()[0]))
    1
    >>> store.close()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = tuple[Callable[[sqlite3.Connection], object], concurrent.futures.Future]

# At most this many callers share one transaction; enough to amortise an fsync, small enough
# that one bad batch never delays many answers.
MAX_BATCH = 128

MIGRATIONS: list[str] = [
    # 1: orders, stock, receipt chain and outbox.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE manifests (
        id INTEGER PRIMARY KEY,
        version TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        loaded_at TEXT NOT NULL,
        source TEXT NOT NULL
    );
    CREATE TABLE items (
        sku TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
        allocated INTEGER NOT NULL CHECK (allocated >= 0),
        sold INTEGER NOT NULL DEFAULT 0 CHECK (sold >= 0 AND sold <= allocated),
        active INTEGER NOT NULL DEFAULT 1,
        position INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE stock_ledger (
        id INTEGER PRIMARY KEY,
        sku TEXT NOT NULL REFERENCES items (sku),
        field TEXT NOT NULL CHECK (field IN ('allocated', 'sold')),
        delta INTEGER NOT NULL,
        reason TEXT NOT NULL,
        order_id TEXT,
        manifest_id INTEGER REFERENCES manifests (id),
        at TEXT NOT NULL
    );
    CREATE TABLE receipts (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        order_id TEXT NOT NULL,
        body TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE
    );
    CREATE TABLE orders (
        order_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE REFERENCES receipts (seq),
        fingerprint TEXT NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        total_cents INTEGER NOT NULL,
        payment_method TEXT NOT NULL,
        payment_status TEXT NOT NULL,
        status TEXT NOT NULL,
        trace_id TEXT NOT NULL
    );
    CREATE INDEX orders_recent ON orders (created_at);
    CREATE TABLE order_lines (
        order_id TEXT NOT NULL REFERENCES orders (order_id),
        line_no INTEGER NOT NULL,
        sku TEXT NOT NULL,
        name TEXT NOT NULL,
        qty INTEGER NOT NULL CHECK (qty > 0),
        price_cents INTEGER NOT NULL,
        PRIMARY KEY (order_id, line_no)
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL,
        relayed_at TEXT
    );
    CREATE INDEX outbox_pending ON outbox (id) WHERE relayed_at IS NULL;
    """,
    # 2: reconciliation with HQ.
    """
    ALTER TABLE orders ADD COLUMN relayed_at TEXT;
    ALTER TABLE orders ADD COLUMN reconciled_at TEXT;
    ALTER TABLE orders ADD COLUMN ack_reason TEXT;
    ALTER TABLE orders ADD COLUMN mismatch_at TEXT;
    ALTER TABLE orders ADD COLUMN refund_due_at TEXT;
    ALTER TABLE orders ADD COLUMN resends INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX orders_open ON orders (status, created_at)
        WHERE status IN ('queued', 'relayed');
    CREATE INDEX outbox_key ON outbox (kind, key);
    """,
    # 3: the print queue (agent/printing.py).
    """
    CREATE TABLE print_jobs (
        id INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL REFERENCES orders (order_id),
        kind TEXT NOT NULL CHECK (kind IN ('receipt', 'reprint')),
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'printed', 'unsure', 'checked')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX print_jobs_by_state ON print_jobs (state, id);
    CREATE INDEX print_jobs_by_order ON print_jobs (order_id);
    """,
    # 4: kit seconds for the timers, and whether the wall clock was synced (agent/core/clock.py).
    """
    ALTER TABLE orders ADD COLUMN created_ks REAL;
    ALTER TABLE orders ADD COLUMN relayed_ks REAL;
    ALTER TABLE orders ADD COLUMN reconciled_ks REAL;
    ALTER TABLE orders ADD COLUMN clock_synced INTEGER NOT NULL DEFAULT 1;
    DROP INDEX orders_open;
    CREATE INDEX orders_open ON orders (status, created_ks)
        WHERE status IN ('queued', 'relayed');
    """,
]


class StoreClosed(RuntimeError):
    """The store was closed; nothing more can be written."""


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection with the pragmas every part of the kit relies on."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA foreign_keys=ON")
    db.row_factory = sqlite3.Row
    return db


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema up to the newest version; returns that version."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise RuntimeError(f"store schema version {current} is newer than this dropkit "
                           f"({len(MIGRATIONS)}); refusing to touch it")
    for version in range(current + 1, len(MIGRATIONS) + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[version - 1].split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("store schema migrated to version %d", version)
    return len(MIGRATIONS)


class Store:
    """SQLite in WAL mode with one writer thread (group commit) and one reader thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="store-read")
        self._read_db: sqlite3.Connection | None = None
        self._closed = False
        self.commits = 0

    @property
    def is_open(self) -> bool:
        return self._writer is not None and not self._closed

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_db = connect(self.path)
        migrate(write_db)
        self._read_db = connect(self.path)
        self._writer = threading.Thread(target=self._write_loop, args=(write_db,),
                                        name="store-write", daemon=True)
        self._writer.start()

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in the writer's transaction; returns once its change is durable."""
        if self._closed:
            raise StoreClosed("the store is closed")
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._jobs.put((fn, future))
        return await asyncio.wrap_future(future)

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` on the reader's connection (it sees every committed change)."""
        if self._closed:
            raise StoreClosed("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, fn, self._read_db)

    def close(self) -> None:
        """Finish the queued writes, then close both connections."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._jobs.put(None)
            self._writer.join()
        self._reader.shutdown(wait=True)
        if self._read_db is not None:
            self._read_db.close()

    def _write_loop(self, db: sqlite3.Connection) -> None:
        try:
            while True:
                first = self._jobs.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        job = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if job is None:
                        stop = True
                        break
                    batch.append(job)
                # A caller that gave up before its turn (a dropped request) was never answered:
                # its change is not made.
                batch = [job for job in batch if job[1].set_running_or_notify_cancel()]
                if batch:
                    self._run_batch(db, batch)
                if stop:
                    return
        finally:
            db.close()

    def _run_batch(self, db: sqlite3.Connection, batch: list[Job]) -> None:
        outcomes: list[tuple[bool, object]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for fn, _ in batch:
                db.execute("SAVEPOINT job")
                try:
                    outcomes.append((True, fn(db)))
                except Exception as exc:
                    db.execute("ROLLBACK TO job")
                    outcomes.append((False, exc))
                db.execute("RELEASE job")
            db.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
            log.error("store commit failed, %d changes not made: %s", len(batch), exc)
            if db.in_transaction:
                db.execute("ROLLBACK")
            for _, future in batch:
                future.set_exception(exc)
            return
        for (ok, value), (_, future) in zip(outcomes, batch, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)  # type: ignore[arg-type]
