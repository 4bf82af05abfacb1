"""The store's schema: the migrations, applied in order at start (``PRAGMA user_version``)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator

log = logging.getLogger(__name__)

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
    # 5: slips beside receipts (agent/core/printjobs.py): NOT PAID, void and refund slips, and
    # a slip no longer true before it printed is dropped (SQLite cannot change a CHECK in
    # place); orders get their number.
    """
    CREATE TABLE print_jobs_5 (
        id INTEGER PRIMARY KEY,
        order_id TEXT NOT NULL REFERENCES orders (order_id),
        kind TEXT NOT NULL
            CHECK (kind IN ('receipt', 'reprint', 'unpaid', 'void', 'refund')),
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'printed', 'unsure', 'checked', 'dropped')),
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        note TEXT NOT NULL DEFAULT ''
    );
    INSERT INTO print_jobs_5 SELECT id, order_id, kind, state, created_at, updated_at, note
        FROM print_jobs;
    DROP TABLE print_jobs;
    ALTER TABLE print_jobs_5 RENAME TO print_jobs;
    CREATE INDEX print_jobs_by_state ON print_jobs (state, id);
    CREATE INDEX print_jobs_by_order ON print_jobs (order_id);
    -- The order's number on the till and its receipt: 1, 2, 3 in the order of their sales,
    -- without the gaps voids and refunds leave in the chain's seq (agent/core/views.py).
    ALTER TABLE orders ADD COLUMN number INTEGER;
    UPDATE orders SET number = numbered.n FROM (
        SELECT order_id, row_number() OVER (ORDER BY seq) AS n FROM orders) AS numbered
        WHERE orders.order_id = numbered.order_id;
    CREATE TRIGGER orders_numbered AFTER INSERT ON orders WHEN NEW.number IS NULL BEGIN
        UPDATE orders SET number = 1 + coalesce(
            (SELECT number FROM orders WHERE seq < NEW.seq ORDER BY seq DESC LIMIT 1), 0)
            WHERE order_id = NEW.order_id;
    END;
    """,
    # 6: customers' reservations (agent/core/holds.py) and the drop's item rules.
    """
    ALTER TABLE items ADD COLUMN held INTEGER NOT NULL DEFAULT 0
        CHECK (held >= 0 AND sold + held <= allocated);
    ALTER TABLE items ADD COLUMN limit_per_customer INTEGER;
    ALTER TABLE items ADD COLUMN opens_at TEXT;
    CREATE TABLE holds (
        order_id TEXT PRIMARY KEY,
        code TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('held', 'settled', 'expired', 'cancelled')),
        device TEXT,
        client TEXT NOT NULL,
        arrival INTEGER NOT NULL,
        total_cents INTEGER NOT NULL,
        trace_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_ks REAL NOT NULL,
        expires_at TEXT NOT NULL,
        expires_ks REAL NOT NULL,
        ended_at TEXT
    );
    CREATE UNIQUE INDEX holds_live_code ON holds (code) WHERE state = 'held';
    CREATE INDEX holds_live ON holds (expires_ks) WHERE state = 'held';
    CREATE INDEX holds_by_code ON holds (code, created_ks);
    CREATE INDEX holds_by_device ON holds (device);
    CREATE INDEX holds_by_client ON holds (client);
    CREATE TABLE hold_lines (
        order_id TEXT NOT NULL REFERENCES holds (order_id),
        line_no INTEGER NOT NULL,
        sku TEXT NOT NULL REFERENCES items (sku),
        name TEXT NOT NULL,
        qty INTEGER NOT NULL CHECK (qty > 0),
        price_cents INTEGER NOT NULL,
        PRIMARY KEY (order_id, line_no)
    );
    CREATE INDEX hold_lines_by_sku ON hold_lines (sku);
    """,
    # 7: fewer pages per sale (docs/store.md, "Bytes written per order"): each index a sale
    # adds to is one more page in its commit. No query reads orders by created_at; a resend
    # finds its sale's message by the order's sale_msg_id, not by an index over every
    # message's key; the print queue's index holds only the jobs not yet done.
    """
    ALTER TABLE orders ADD COLUMN sale_msg_id INTEGER;
    UPDATE orders SET sale_msg_id = (SELECT min(id) FROM outbox
                                     WHERE kind = 'sale' AND key = orders.order_id);
    DROP INDEX outbox_key;
    DROP INDEX orders_recent;
    DROP INDEX print_jobs_by_state;
    CREATE INDEX print_jobs_waiting ON print_jobs (state, id)
        WHERE state IN ('pending', 'sending', 'unsure');
    """,
]


def _statements(script: str) -> Iterator[str]:
    """A migration's statements, each whole (a trigger's body holds semicolons of its own)."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip("; \n"):
                yield statement
            statement = ""


def migrate(db: sqlite3.Connection) -> int:
    """Bring the schema up to the newest version; returns that version."""
    current = db.execute("PRAGMA user_version").fetchone()[0]
    if current > len(MIGRATIONS):
        raise RuntimeError(f"store schema version {current} is newer than this dropkit "
                           f"({len(MIGRATIONS)}); refusing to touch it")
    for version in range(current + 1, len(MIGRATIONS) + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _statements(MIGRATIONS[version - 1]):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={version}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        log.info("store schema migrated to version %d", version)
    return len(MIGRATIONS)
