"""The store's pages: a new store gets 1 KB pages, an older one with SQLite's 4 KB pages is
rewritten with them at open (its sales, chain and identity intact), a large one is left as it
is; the tuning that keeps a sale's commit small is on the writer.

Real SQLite files and the real sales rules; the 4 KB store is made the way an older kit made
it (SQLite's default page size) by rewriting one with ``VACUUM``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

import agent.store.sqlite as store_module
from agent.core import receipts
from agent.core.clock import Moment, now_iso
from agent.core.manifest import Item, Manifest, apply_manifest
from agent.core.orders import OrderRequest, place_order, sale_matches_order
from agent.store import MIGRATIONS, PAGE_SIZE, Store, migrate


def page_size(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()


def with_pages_of(path: Path, size: int) -> None:
    """Rewrite the closed store at ``path`` with pages of ``size`` bytes, back in WAL mode."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute(f"PRAGMA page_size={size}")
    db.execute("VACUUM")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    assert page_size(path) == size


def open_and_sell(path: Path, orders: int, kit_id: str | None = "kit-pages") -> Store:
    store = Store(path, kit_id=kit_id)
    store.open()

    async def sell() -> None:
        await store.write(lambda db: apply_manifest(
            db, Manifest("p-1", (Item("T-1", "Tee", 100, 1000),)), "test", now_iso()))
        for n in range(orders):
            request = OrderRequest(f"order-{n:04d}", (("T-1", 1),), "cash")
            await store.write(lambda db, request=request, n=n: place_order(
                db, request, "kit-pages", "trace", Moment(now_iso(), float(n))))
    asyncio.run(sell())
    return store


def chain_links(path: Path) -> int:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        report = receipts.verify(db, sale_matches_order)
    finally:
        db.close()
    assert report.ok, report
    return report.links


def test_a_new_store_has_small_pages_and_the_writer_keeps_commits_small(tmp_path: Path) -> None:
    path = tmp_path / "dropkit.db"
    store = open_and_sell(path, 3)

    def pragmas(db: sqlite3.Connection) -> tuple:
        return tuple(db.execute(f"PRAGMA {name}").fetchone()[0] for name in (
            "page_size", "journal_mode", "synchronous", "temp_store", "secure_delete",
            "wal_autocheckpoint", "journal_size_limit"))
    # synchronous 2 is FULL: every commit of a confirmed sale is on the disk before its answer.
    assert asyncio.run(store.write(pragmas)) == (
        PAGE_SIZE, "wal", 2, 2, 2, store_module.CHECKPOINT_PAGES, store_module.WAL_LIMIT_BYTES)
    store.close()
    assert page_size(path) == PAGE_SIZE == 1024


def test_an_older_store_is_rewritten_with_small_pages_and_stays_the_kits(tmp_path: Path) -> None:
    path = tmp_path / "dropkit.db"
    open_and_sell(path, 40).close()
    with_pages_of(path, 4096)

    store = Store(path, kit_id="kit-pages")  # the identity check passes, before and after
    store.open()
    assert asyncio.run(store.read(lambda db: db.execute(
        "SELECT count(*) FROM orders").fetchone()[0])) == 40
    store.close()
    assert page_size(path) == PAGE_SIZE
    assert chain_links(path) == 40
    again = Store(path, kit_id="kit-pages")  # and it opens again as the kit's store
    again.open()
    again.close()


def test_a_large_older_store_keeps_its_pages(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "dropkit.db"
    open_and_sell(path, 5, kit_id=None).close()
    with_pages_of(path, 4096)
    monkeypatch.setattr(store_module, "CONVERT_MAX_BYTES", path.stat().st_size - 1)
    store = Store(path)
    store.open()
    store.close()
    assert page_size(path) == 4096
    assert chain_links(path) == 5


def test_a_store_at_migration_6_gets_its_sales_message_pointers_at_7(tmp_path: Path) -> None:
    """Migration 7 (fewer pages) comes after the reservations (6): a store the shop left at 6
    keeps its reservations' tables, and each order learns its first sale message's id."""
    db = store_module.connect(tmp_path / "old.db")
    for version, migration in enumerate(MIGRATIONS[:6], 1):
        db.executescript(migration + f";PRAGMA user_version={version}")
    for seq, order_id in ((1, "ord-1"), (2, "ord-2")):
        db.execute("INSERT INTO receipts VALUES (?, 'sale', ?, '{}', ?, ?)",
                   (seq, order_id, "0" * 64, f"{seq:064x}"))
        db.execute("INSERT INTO orders (order_id, seq, fingerprint, created_at, updated_at, "
                   "total_cents, payment_method, payment_status, status, trace_id) VALUES "
                   "(?, ?, 'f', 't', 't', 800, 'cash', 'paid', 'relayed', 'x')", (order_id, seq))
    for kind, key in (("sale", "ord-1"), ("mode", ""), ("sale", "ord-2"), ("sale", "ord-1")):
        db.execute("INSERT INTO outbox (kind, key, payload, created_at) VALUES (?, ?, '{}', 't')",
                   (kind, key))  # the last: a resent copy of ord-1's sale

    assert migrate(db) == len(MIGRATIONS) == 7

    assert [tuple(row) for row in db.execute(
        "SELECT order_id, sale_msg_id FROM orders ORDER BY seq")] == [("ord-1", 1), ("ord-2", 3)]
    assert db.execute("SELECT count(*) FROM holds").fetchone()[0] == 0
    indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'index'")}
    assert "print_jobs_waiting" in indexes and "holds_live_code" in indexes
    assert not indexes & {"outbox_key", "orders_recent", "print_jobs_by_state"}
    db.close()
