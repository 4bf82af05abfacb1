"""HQ's reconciliation rule on both ledgers (SQLite and PostgreSQL), fed the messages a real kit
store publishes: chain order, holds, central stock, repeats, and every link checked against the
one before it (a forged, broken or forked link is refused and reported)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent.core.clock import Moment
from agent.core.manifest import parse_manifest
from agent.core.orders import OrderRequest, place_order, refund_order
from agent.core.receipts import GENESIS_HASH, canonical_json, chain_hash
from agent.hq.allocations import CENTRAL, Allocations, Refused
from agent.hq.ledger import Ledger
from agent.hq.links import parse
from agent.hq.schema import MIGRATIONS, VERSION_TABLE
from agent.ops.harness import query_ledger, wait_for
from tests.core.sales_helpers import KIT, at, open_db, sell
from tests.hq_helpers import kit_messages, postgres_database


def central(qty: int) -> Any:
    return parse_manifest({"version": "c", "items": [
        {"sku": "ZINE-07", "name": "Zine", "price_cents": 800, "qty": qty}]})


def kit_store(tmp_path: Path, sales: int, name: str = "kit.db") -> sqlite3.Connection:
    db = open_db(tmp_path / name)
    for n in range(1, sales + 1):
        sell(db, f"order-{n:04}", n)
    return db


def report(target: str) -> tuple[int, list[str]]:
    done = subprocess.run([sys.executable, "-m", "agent", "hq", "report", "--db", target],
                          capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout.splitlines()


def relinked(message: dict[str, Any], prev: str, **signed: Any) -> dict[str, Any]:
    """``message`` with its body edited (``signed``) and its hash recomputed over ``prev``, as a
    forger with the kit's database would make it."""
    body = canonical_json({**json.loads(message["receipt"]["body"]), **signed})
    return {**message, "receipt": {**message["receipt"], "prev": prev, "body": body,
                                   "hash": chain_hash(prev, body)}}


def test_hq_applies_each_kits_chain_in_order(tmp_path: Path, hq_ledger: str) -> None:
    ledger = Ledger(hq_ledger)
    ledger.load_stock(central(2))
    first, second, third = kit_messages(kit_store(tmp_path, 3))
    # The broker hands #2 and #3 over before #1: nothing is decided until #1 comes, then the
    # three are applied as the kit sold them (and the third finds central stock gone).
    assert ledger.record(KIT, third) == []
    assert ledger.record(KIT, second) == []
    acks = ledger.record(KIT, first)
    assert [(a["order_id"], a["result"]) for a in acks] == [
        ("order-0001", "accepted"), ("order-0002", "accepted"), ("order-0003", "rejected")]
    assert query_ledger(hq_ledger, "SELECT count(*) FROM held") == [(0,)]
    assert query_ledger(hq_ledger, "SELECT qty, sold FROM stock") == [(2, 2)]
    ledger.close()


def test_a_repeat_of_a_link_that_applied_held_ones_answers_their_sales_again(
        tmp_path: Path, hq_ledger: str) -> None:
    """The sales a link's arrival applies from ``held`` are answered with it, and HQ's kill
    before the broker has those answers leaves only that link's message unacknowledged, which
    the broker sends again: its repeat answers them again, as recorded, whatever kind of link it
    is. Nothing more: not a sale after them, nothing for a link that applied none."""
    ledger = Ledger(hq_ledger)
    ledger.load_stock(central(10))
    db = kit_store(tmp_path, 3)
    refund_order(db, "order-0002", True, "changed their mind", KIT, at(4))
    sell(db, "order-0005", 5)
    first, second, third, refund, fifth = kit_messages(db)
    assert ledger.record(KIT, third) == ledger.record(KIT, second) == []
    answered = ledger.record(KIT, first)
    assert [a["order_id"] for a in answered] == ["order-0001", "order-0002", "order-0003"]
    assert ledger.record(KIT, fifth) == []
    [fifths] = ledger.record(KIT, refund)  # a refund has no answer; the sale it applied has
    assert fifths["order_id"] == "order-0005"
    assert ledger.record(KIT, first) == answered
    assert ledger.record(KIT, refund) == [fifths]
    assert [a["order_id"] for a in ledger.record(KIT, second)] == ["order-0002"]
    assert ledger.record(KIT, fifth) == [fifths]
    ledger.close()


def test_hq_report_lists_rejections_and_chain_gaps(tmp_path: Path, hq_ledger: str) -> None:
    ledger = Ledger(hq_ledger)
    ledger.load_stock(central(1))
    db = kit_store(tmp_path, 2)
    place_order(db, OrderRequest("order-0003", (("ZINE-07", 1),), "cash"), KIT, "trace-3",
                Moment(at(3), 3, synced=False))
    first, _, third = kit_messages(db)
    assert [a["result"] for a in ledger.record(KIT, first)] == ["accepted"]
    # #3 before #2: held for the missing link, then taken without it after hold_s.
    assert ledger.record(KIT, third, now=100.0) == []
    assert ledger.release_overdue(now=100.0 + ledger.hold_s - 1) == []
    [(kit, rejected)] = ledger.release_overdue(now=100.0 + ledger.hold_s)
    assert kit == KIT and rejected["result"] == "rejected"
    assert "central stock has 0 left" in rejected["reason"]
    # A repeat is answered the same and counted, not sold twice.
    assert [a["result"] for a in ledger.record(KIT, first)] == ["accepted"]
    assert query_ledger(hq_ledger, "SELECT value FROM counters WHERE name = 'duplicates'") \
        == [(1,)]
    with pytest.raises(ValueError):
        ledger.record(KIT, {"type": "sale", "order_id": 7})
    ledger.close()
    assert report(hq_ledger) == (1, [
        "rejected: kit kit-test order order-0003 (receipt #3, sold 2025-06-01T10:00:03.000+00:00 "
        "by the kit's clock, which was not set): ZINE-07: central stock has 0 left, 1 sold",
        "gap: kit kit-test receipt chain misses 1 link(s): #2",
        "2 mismatch(es)"])


def test_a_forged_link_is_rejected_and_reported(tmp_path: Path, hq_ledger: str) -> None:
    """Right seq, body edited, hash recomputed without the link before it: rejected; so is a
    body edited with its hash left, and a message that says other than what it signed."""
    ledger = Ledger(hq_ledger)
    ledger.load_stock(central(100))
    messages = kit_messages(kit_store(tmp_path, 4))
    assert ledger.record(KIT, messages[0])[0]["result"] == "accepted"
    # #2 for 5 zines instead of 1, hashed as if it were the first link.
    forged = relinked(messages[1], GENESIS_HASH, total_cents=4000, lines=[
        {"sku": "ZINE-07", "name": "Zine no. 7", "qty": 5, "price_cents": 800}])
    forged = {**forged, "total_cents": 4000, "lines": [{**messages[1]["lines"][0], "qty": 5}]}
    [ack] = ledger.record(KIT, forged)
    assert ack["result"] == "rejected" and "does not chain to the link before it" in ack["reason"]
    # HQ goes on from the link the kit sent, whose body was then edited without a new hash.
    third = messages[2]
    edited = {**third, "receipt": {**third["receipt"], "prev": forged["receipt"]["hash"],
              "body": third["receipt"]["body"].replace('"qty":1', '"qty":2')}}
    edited["receipt"]["hash"] = chain_hash(forged["receipt"]["hash"], third["receipt"]["body"])
    [ack] = ledger.record(KIT, edited)
    assert (ack["result"], ack["reason"]) == ("rejected",
                                              "receipt #3 its hash does not match its contents")
    # A message that says 3 were sold where its link (chained rightly) signed 1.
    fourth = relinked(messages[3], edited["receipt"]["hash"])
    fourth = {**fourth, "lines": [{**fourth["lines"][0], "qty": 3}]}
    [ack] = ledger.record(KIT, fourth)
    assert (ack["result"], ack["reason"]) == (
        "rejected", "receipt #4 the message's lines differ from what it signed")
    # Nothing refused took central stock; the repeat of a refused one is answered the same.
    assert query_ledger(hq_ledger, "SELECT sold FROM stock") == [(1,)]
    assert ledger.record(KIT, forged)[0]["result"] == "rejected"
    ledger.close()
    code, lines = report(hq_ledger)
    assert code == 1
    assert [line for line in lines if line.startswith("chain:")] == [
        "chain: kit kit-test sale order-0002: receipt #2 does not chain to the link before it "
        "as HQ holds it (the chain was forked or rewritten)",
        "chain: kit kit-test sale order-0003: receipt #3 its hash does not match its contents",
        "chain: kit kit-test sale order-0004: receipt #4 the message's lines differ from what "
        "it signed"]


def test_a_chain_forked_from_an_earlier_link_is_rejected(tmp_path: Path, hq_ledger: str) -> None:
    """The kit's database rewritten from #2 on (hashes recomputed, each chained to the one
    before): HQ holds #1 to #3, so the other #2 is a fork, and so is the next new link."""
    ledger = Ledger(hq_ledger)
    messages = kit_messages(kit_store(tmp_path, 3))
    for message in messages:
        assert ledger.record(KIT, message)[0]["result"] == "accepted"
    other_2 = relinked(messages[1], messages[0]["receipt"]["hash"], payment_method="card")
    [ack] = ledger.record(KIT, other_2)
    assert (ack["order_id"], ack["result"]) == ("order-0002", "rejected")
    assert "receipt #2 forks the chain" in ack["reason"]
    # The rewritten kit's next sale chains to its own #3, not to the #3 HQ holds.
    rewritten_3 = relinked(messages[2], other_2["receipt"]["hash"])
    db = open_db(tmp_path / "next.db")
    for n in range(1, 5):
        sell(db, f"order-{n:04}", n)
    new_4 = relinked(kit_messages(db)[3], rewritten_3["receipt"]["hash"])
    [ack] = ledger.record(KIT, new_4)
    assert ack["result"] == "rejected" and "does not chain" in ack["reason"]
    # The genuine links are still answered as before.
    assert ledger.record(KIT, messages[1])[0]["result"] == "accepted"
    ledger.close()
    code, lines = report(hq_ledger)
    assert code == 1 and sum(line.startswith("chain: kit kit-test sale order-000") for line in
                             lines) == 2, lines


def test_voids_refunds_and_old_kits(tmp_path: Path, hq_ledger: str) -> None:
    """A refund with restock gives central stock back; a kit that does not send what its links
    were hashed from is recorded, and the report says its links are unverified."""
    ledger = Ledger(hq_ledger)
    ledger.load_stock(central(10))
    db = kit_store(tmp_path, 2)
    refund_order(db, "order-0002", True, "changed their mind", KIT, at(5))
    for message in kit_messages(db):
        ledger.record(KIT, message)
    assert query_ledger(hq_ledger, "SELECT sold FROM stock") == [(1,)]
    old = kit_messages(kit_store(tmp_path, 1, "old.db"))[0]
    old["receipt"] = {"seq": 1, "hash": old["receipt"]["hash"]}
    assert ledger.record("kit-old", old)[0]["result"] == "accepted"
    ledger.close()
    assert report(hq_ledger) == (1, [
        "unverified: kit kit-old sent 1 receipt link(s) without what they were hashed from "
        "(a kit older than HQ's check)", "1 mismatch(es)"])


def test_a_ledger_from_before_the_schema_version_is_migrated(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "hq.db")
    old.executescript("""
        CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL,
                            sold INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE sales (kit_id TEXT NOT NULL, order_id TEXT NOT NULL, seq INTEGER NOT NULL,
            total_cents INTEGER NOT NULL, lines TEXT NOT NULL, result TEXT NOT NULL,
            reason TEXT NOT NULL, trace_id TEXT NOT NULL, received_at TEXT NOT NULL,
            PRIMARY KEY (kit_id, order_id));
        CREATE TABLE links (kit_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
            order_id TEXT NOT NULL, hash TEXT NOT NULL, received_at TEXT NOT NULL,
            PRIMARY KEY (kit_id, seq));
        CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE chains (kit_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
        CREATE TABLE held (kit_id TEXT NOT NULL, seq INTEGER NOT NULL, message TEXT NOT NULL,
            held_at REAL NOT NULL, PRIMARY KEY (kit_id, seq));
        INSERT INTO sales VALUES ('kit-test', 'order-0001', 1, 800, '[]', 'rejected', 'old',
                                  '', '2025-01-01');
        INSERT INTO links VALUES ('kit-test', 1, 'sale', 'order-0001', 'x', '2025-01-01');
        INSERT INTO chains VALUES ('kit-test', 2);
    """)
    old.close()
    ledger = Ledger(tmp_path / "hq.db")
    second = kit_messages(kit_store(tmp_path, 2))[1]
    assert ledger.record(KIT, second)[0]["result"] == "accepted"  # #1's hash unknown: on its own
    ledger.close()
    assert query_ledger(str(tmp_path / "hq.db"), "SELECT version FROM ledger_schema") == \
        [(len(MIGRATIONS),)]
    assert report(str(tmp_path / "hq.db"))[1][0] == (
        "rejected: kit kit-test order order-0001 (receipt #1, sold at an unknown time): old")


def ledger_at_version(target: str, version: int, *rows: str) -> None:
    """A ledger as an HQ of schema ``version`` left it: its migrations' own statements, the
    version recorded, then ``rows``."""
    statements = [VERSION_TABLE, *(s for m in MIGRATIONS[:version] for s in m),
                  f"INSERT INTO ledger_schema (version) VALUES ({version})", *rows]
    if target.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(target) as conn:  # one transaction, committed at the end
            for statement in statements:
                conn.execute(statement)
        return
    db = sqlite3.connect(target)
    with db:
        for statement in statements:
            db.execute(statement)
    db.close()


def test_a_ledger_at_version_3_takes_allocations_after_its_migration(
        tmp_path: Path, hq_ledger: str) -> None:
    """An HQ from before allocations (ledger version 3) with sales on it: the new HQ migrates it
    to the latest, keeps its stock and sales, and moves units from its central stock."""
    ledger_at_version(hq_ledger, 3, "INSERT INTO stock (sku, qty, sold) VALUES ('ZINE-07', 10, 1)")
    ledger = Ledger(hq_ledger)
    try:
        assert ledger.record(KIT, kit_messages(kit_store(tmp_path, 1))[0])[0]["result"] == \
            "accepted"
        allocations = Allocations(ledger.db)
        with pytest.raises(Refused, match="central stock has 10 not given to a kit, 11 asked"):
            allocations.request(CENTRAL, "kit-a", "ZINE-07", 11)
        move = allocations.move(allocations.request(CENTRAL, "kit-a", "ZINE-07", 5))
        assert move is not None and move["state"] == "pending"
    finally:
        ledger.close()
    assert query_ledger(hq_ledger, "SELECT version FROM ledger_schema") == [(len(MIGRATIONS),)]
    assert len(MIGRATIONS) == 5
    assert query_ledger(hq_ledger, "SELECT sku, qty, sold, name FROM stock") == \
        [("ZINE-07", 10, 2, "")]


@pytest.mark.parametrize(("qty", "results"), [
    (100, ["accepted"] * 5),  # the stock moved, no decision changes: the batch stands
    (5, ["accepted"] * 2 + ["rejected"] * 3)])  # it does: the batch is decided again
def test_a_batch_decides_by_central_stock_as_it_is_when_the_batch_commits(
        tmp_path: Path, qty: int, results: list[str]) -> None:
    """Another instance sells 3 units while a batch of 5 sales decides against stock it read
    without a lock: at the end the batch locks the stock rows, finds they moved, and decides
    again if any sale would be decided otherwise (never more sold than central stock holds)."""
    import psycopg

    with postgres_database() as url:
        ledger = Ledger(url)
        ledger.load_stock(central(qty))
        messages = kit_messages(kit_store(tmp_path, 5))
        with psycopg.connect(url) as other, psycopg.connect(url, autocommit=True) as watch:
            other.execute("UPDATE stock SET sold = sold + 3")  # not committed yet
            acks: list[Any] = []
            batch = threading.Thread(target=lambda: acks.extend(ledger.record_many(
                [parse(KIT, message) for message in messages])))
            batch.start()
            wait_for(lambda: watch.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'").fetchone()[0] == 1, 30,
                "the batch waits for the stock rows at its end")
            other.commit()
            batch.join(30)
        assert [ack["result"] for _, ack in acks] == results
        assert query_ledger(url, "SELECT qty, sold FROM stock") == [
            (qty, 3 + results.count("accepted"))]
        ledger.close()
