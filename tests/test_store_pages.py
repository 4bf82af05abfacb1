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

import agent.store as store_module
from agent.core import receipts
from agent.core.clock import Moment, now_iso
from agent.core.manifest import Item, Manifest, apply_manifest
from agent.core.orders import OrderRequest, place_order, sale_matches_order
from agent.store import PAGE_SIZE, Store


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
