"""The ledger's schema, one for SQLite and PostgreSQL: :data:`MIGRATIONS` in order, the version
reached kept in ``ledger_schema`` (docs/mqtt.md, "The ledger").

Each migration is a list of statements in the SQL both databases speak;
:func:`agent.hq.sql.migrate` runs the missing ones when the ledger opens.
"""

from __future__ import annotations

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS ledger_schema (version INTEGER NOT NULL)"
MIGRATION_LOCK = 0x64726F70  # PostgreSQL advisory lock held while one instance migrates

MIGRATIONS: list[list[str]] = [
    # 1: sales, stock, the links of each kit's chain, held messages.
    ["CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, qty BIGINT NOT NULL, "
     "sold BIGINT NOT NULL DEFAULT 0)",
     "CREATE TABLE IF NOT EXISTS sales (kit_id TEXT NOT NULL, order_id TEXT NOT NULL, "
     "seq BIGINT NOT NULL, total_cents BIGINT NOT NULL, lines TEXT NOT NULL, "
     "result TEXT NOT NULL, reason TEXT NOT NULL, trace_id TEXT NOT NULL, "
     "received_at TEXT NOT NULL, PRIMARY KEY (kit_id, order_id))",
     "CREATE TABLE IF NOT EXISTS links (kit_id TEXT NOT NULL, seq BIGINT NOT NULL, "
     "type TEXT NOT NULL, order_id TEXT NOT NULL, hash TEXT NOT NULL, "
     "received_at TEXT NOT NULL, PRIMARY KEY (kit_id, seq))",
     "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
     "CREATE TABLE IF NOT EXISTS chains (kit_id TEXT PRIMARY KEY, next_seq BIGINT NOT NULL)",
     "CREATE TABLE IF NOT EXISTS held (kit_id TEXT NOT NULL, seq BIGINT NOT NULL, "
     "message TEXT NOT NULL, held_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kit_id, seq))"],
    # 2: when the kit sold, and whether its clock was set.
    ["ALTER TABLE sales ADD COLUMN sold_at TEXT NOT NULL DEFAULT ''",
     "ALTER TABLE sales ADD COLUMN clock_synced INTEGER NOT NULL DEFAULT 1"],
    # 3: verified links: each chain's head, each link's fault (if any) and whether it came with
    # what it was hashed from; the faults seen (a broken or forked link); the links of an order.
    ["ALTER TABLE chains ADD COLUMN head_hash TEXT NOT NULL DEFAULT ''",
     "ALTER TABLE links ADD COLUMN fault TEXT NOT NULL DEFAULT ''",
     "ALTER TABLE links ADD COLUMN verified INTEGER NOT NULL DEFAULT 0",
     "CREATE TABLE faults (kit_id TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL, "
     "type TEXT NOT NULL, order_id TEXT NOT NULL, reason TEXT NOT NULL, "
     "received_at TEXT NOT NULL, PRIMARY KEY (kit_id, seq, hash))",
     "CREATE INDEX links_of_order ON links (kit_id, order_id)"],
    # 4: allocations: what central stock each kit is given (its manifest from HQ), the
    # manifest last published to each kit and its answer, moves between kits, and what HQ
    # last heard of each kit (status, telemetry) for the preflight.
    ["ALTER TABLE stock ADD COLUMN name TEXT NOT NULL DEFAULT ''",
     "ALTER TABLE stock ADD COLUMN price_cents BIGINT NOT NULL DEFAULT 0",
     "CREATE TABLE allocations (kit_id TEXT NOT NULL, sku TEXT NOT NULL, qty BIGINT NOT NULL, "
     "PRIMARY KEY (kit_id, sku))",
     "CREATE TABLE kit_manifests (kit_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, "
     "payload TEXT NOT NULL, state TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', "
     "sent_at TEXT NOT NULL, answered_at TEXT NOT NULL DEFAULT '')",
     "CREATE TABLE moves (id BIGINT PRIMARY KEY, from_kit TEXT NOT NULL, to_kit TEXT NOT NULL, "
     "sku TEXT NOT NULL, qty BIGINT NOT NULL, state TEXT NOT NULL, seq BIGINT NOT NULL DEFAULT 0,"
     " reason TEXT NOT NULL DEFAULT '', requested_at TEXT NOT NULL, "
     "done_at TEXT NOT NULL DEFAULT '')",
     "CREATE TABLE kits (kit_id TEXT PRIMARY KEY, status TEXT NOT NULL DEFAULT '', "
     "status_at DOUBLE PRECISION NOT NULL DEFAULT 0, heard_at DOUBLE PRECISION NOT NULL "
     "DEFAULT 0, queue_depth BIGINT, mode TEXT NOT NULL DEFAULT '')"],
    # 5: the last of the held links each link's arrival applied after it (0: none), so a
    # repeat of the link answers their sales again.
    ["ALTER TABLE links ADD COLUMN released_to BIGINT NOT NULL DEFAULT 0"],
]
