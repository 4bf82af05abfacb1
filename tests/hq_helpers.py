"""HQ's ledger on both databases for the tests: a SQLite file, or a PostgreSQL database of the
test's own on 127.0.0.1:5432 (user postgres, trust auth), created for it and dropped after; and
kits' ``orders`` messages as their uplink publishes them: from a real kit store, or from a fleet
of simulated kits."""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.core import outbox
from agent.core.receipts import GENESIS_HASH, canonical_json, chain_hash

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
BACKENDS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new database's URL; dropped (with any connection left to it) afterwards."""
    import psycopg

    name = f"dropkit_test_{secrets.token_hex(6)}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def ledger_target(backend: str, directory: Path) -> Iterator[str]:
    """Where a ledger goes on ``backend``: a file in ``directory``, or a new database."""
    if backend == "sqlite":
        yield str(directory / "hq.db")
        return
    with postgres_database() as url:
        yield url


def kit_messages(db: sqlite3.Connection, after_id: int = 0) -> list[dict[str, Any]]:
    """The kit's ``orders`` messages not relayed yet, exactly as its uplink publishes them."""
    return [json.loads(outbox.with_message_id(row["payload"], row["id"]))
            for row in outbox.pending(db, after_id, 100_000) if row["kind"] != "event"]


def fleet(prefix: str, kits: int, sales: int, sku: Callable[[int, int], tuple[str, int]]
          ) -> list[tuple[str, list[bytes]]]:
    """``(kit id, its orders payloads in chain order)`` for each of ``kits`` simulated kits
    ``prefix-00000`` on: each sale one unit of ``sku(kit, seq)`` (its SKU and price), a real
    receipt link over the one before, in the payload a kit's uplink publishes."""
    out = []
    for k in range(kits):
        kit_id, prev, payloads = f"{prefix}-{k:05}", GENESIS_HASH, []
        for seq in range(1, sales + 1):
            sku_id, price = sku(k, seq)
            order_id, created = f"{kit_id}-order-{seq:04}", "2025-06-01T10:00:00.000+00:00"
            lines = [{"name": sku_id, "price_cents": price, "qty": 1, "sku": sku_id}]
            body = canonical_json({"created_at": created, "kind": "sale", "kit_id": kit_id,
                                   "lines": lines, "order_id": order_id,
                                   "payment_method": "cash", "seq": seq, "total_cents": price})
            link = chain_hash(prev, body)
            payloads.append(canonical_json({
                "clock_synced": True, "created_at": created, "kit_id": kit_id,
                "lines": [{**line, "amount_cents": price} for line in lines],
                "order_id": order_id, "payment": {"method": "cash", "status": "paid"},
                "receipt": {"seq": seq, "hash": link, "prev": prev, "body": body},
                "status": "queued", "total_cents": price, "trace_id": f"t-{order_id}",
                "type": "sale", "updated_at": created, "msg_id": seq}).encode())
            prev = link
        out.append((kit_id, payloads))
    return out


@contextlib.contextmanager
def holding(url: str, sql: str, *args: Any) -> Iterator[None]:
    """A transaction of the test's own on the PostgreSQL database at ``url`` that runs ``sql``
    (``?`` placeholders; a ``SELECT ... FOR UPDATE`` or an advisory lock) and holds what it
    locks until the block ends."""
    import psycopg

    with psycopg.connect(url) as conn:  # not autocommit: the statement begins a transaction
        conn.execute(sql.replace("?", "%s"), args)
        yield
        conn.rollback()


def waiting_for_locks(url: str, query_start: str) -> list[int]:
    """The backends' pids of the connections to the PostgreSQL database at ``url`` that wait
    for a lock in a query starting with ``query_start``."""
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        return [pid for (pid,) in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
            "AND query LIKE %s ORDER BY pid", (url.rsplit("/", 1)[1], query_start + "%"))]


def cut_off_when_blocked(url: str, query_start: str, timeout: float = 15,
                         spare: Iterable[int] = ()) -> int:
    """Wait for a connection to wait for a lock in a query that starts with ``query_start``
    (:func:`waiting_for_locks`), then end it from the server's side, as a PostgreSQL restart
    does (the client's statement fails with an OperationalError); its backend's pid. A pid in
    ``spare`` (one cut off already, still listed for a moment) is left alone."""
    import psycopg

    from agent.ops.harness import wait_for

    def cut() -> int | None:
        pids = [pid for pid in waiting_for_locks(url, query_start) if pid not in spare]
        if not pids:
            return None
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
        return pids[0]

    spare = set(spare)
    return wait_for(cut, timeout, f"a query {query_start!r} waiting for a lock")
