"""Allocations in HQ's ledger (:mod:`agent.hq.allocations`), on SQLite and PostgreSQL: the moves'
checks against central stock and what HQ knows was sold, their two steps (the giving kit lowered
and applied before the taking kit is raised), a kit's refusal ending a move with its manifest
published again as it was, and the preflight's verdict; the kit's side
(:func:`agent.core.allocation.take_allocation`) on a real kit store."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.core.allocation import parse_allocation, take_allocation
from agent.core.manifest import ManifestError, read_manifest
from agent.hq.allocations import Allocations, Refused
from agent.hq.heard import Heard
from agent.hq.ledger import Ledger
from agent.hq.preflight import preflight
from agent.ops.harness import query_ledger, write_manifest
from agent.uplink.session import MAX_PACKET_BYTES
from tests.core.sales_helpers import open_db, sell
from tests.hq_helpers import cut_off_when_blocked, fleet, holding, postgres_database

KIT_A, KIT_B = "kit-00000", "kit-00001"


def answer(allocations: Allocations, kit: str, payload: str, result: str = "applied",
           conflict: dict | None = None) -> None:
    seq = json.loads(payload)["seq"]
    allocations.answered(kit, json.dumps({"seq": seq, "result": result, "conflict": conflict,
                                          "version": f"hq-{seq}", "hash": "ab" * 32}).encode())


def qty_in(payload: str) -> dict[str, int]:
    return {i["sku"]: i["qty"] for i in json.loads(payload)["manifest"]["items"]}


@pytest.fixture
def ledger(hq_ledger: str, tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(hq_ledger)
    ledger.load_stock(read_manifest(write_manifest(tmp_path / "stock.toml", [
        ("ZINE-07", "Zine no. 7", 800, 20), ("PIN-LOGO", "Enamel pin", 600, 5)])))
    yield ledger
    ledger.close()


def record_sales(ledger: Ledger, kit_id: str, n: int) -> None:
    """``n`` sales of one zine each from ``kit_id`` (``kit-0000N``), real receipt links,
    recorded by HQ's rule."""
    kits = fleet("kit", int(kit_id[-1]) + 1, n, lambda kit, seq: ("ZINE-07", 800))
    for payload in dict(kits)[kit_id]:
        ledger.record(kit_id, json.loads(payload))


def test_a_move_lowers_the_giving_kit_first_and_raises_the_other_once_it_applied(
        ledger: Ledger) -> None:
    allocations = Allocations(ledger.db)
    allocations.request("", KIT_A, "ZINE-07", 10)
    [(kit, payload)] = allocations.step()
    assert (kit, qty_in(payload)) == (KIT_A, {"ZINE-07": 10})
    assert json.loads(payload)["manifest"]["items"] == [
        {"sku": "ZINE-07", "name": "Zine no. 7", "price_cents": 800, "qty": 10}]
    assert allocations.step() == []  # waits for kit-a's answer
    answer(allocations, KIT_A, payload)
    assert allocations.step() == []
    assert allocations.move(1)["state"] == "done"

    move = allocations.request(KIT_A, KIT_B, "ZINE-07", 5)
    [(kit, payload)] = allocations.step()
    assert (kit, qty_in(payload), json.loads(payload)["seq"]) == (KIT_A, {"ZINE-07": 5}, 2)
    assert allocations.move(move)["state"] == "releasing"
    answer(allocations, KIT_A, payload)
    [(kit, payload)] = allocations.step()
    assert (kit, qty_in(payload)) == (KIT_B, {"ZINE-07": 5})
    answer(allocations, KIT_B, payload)
    assert allocations.step() == []
    assert allocations.move(move)["state"] == "done"
    assert sorted(allocations.published()) == sorted([
        (KIT_A, allocations.published()[0][1]), (KIT_B, payload)])


def test_the_ledger_refuses_a_move_beyond_what_is_there(ledger: Ledger) -> None:
    allocations = Allocations(ledger.db)
    with pytest.raises(Refused, match="central stock has 20 not given to a kit, 21 asked"):
        allocations.request("", KIT_A, "ZINE-07", 21)
    with pytest.raises(Refused, match="NOPE is not in central stock"):
        allocations.request("", KIT_A, "NOPE", 1)
    with pytest.raises(Refused, match="one unit or more"):
        allocations.request(KIT_A, KIT_A, "ZINE-07", 1)
    allocations.request("", KIT_A, "ZINE-07", 10)
    answer(allocations, KIT_A, allocations.step()[0][1])
    allocations.step()
    record_sales(ledger, KIT_A, 8)  # HQ recorded 8 of kit-a's: 2 can move
    with pytest.raises(Refused, match=r"ZINE-07: kit kit-00000 has 10 allocated and sold 8 \(by "
                                      r"HQ's ledger\), so 2 can move, 3 asked"):
        allocations.request(KIT_A, KIT_B, "ZINE-07", 3)
    with ledger.db.reading() as tx:
        last = tx.one("SELECT state, reason FROM moves ORDER BY id DESC LIMIT 1")
    assert last["state"] == "refused" and "so 2 can move" in last["reason"]
    assert allocations.step() == []


def test_a_kits_refusal_ends_the_move_and_its_manifest_goes_again_as_it_was(
        ledger: Ledger) -> None:
    allocations = Allocations(ledger.db)
    allocations.request("", KIT_A, "ZINE-07", 10)
    answer(allocations, KIT_A, allocations.step()[0][1])
    allocations.step()
    move = allocations.request(KIT_A, KIT_B, "ZINE-07", 6)  # HQ knows of no sale: allowed
    [(_, lowered)] = allocations.step()
    answer(allocations, KIT_A, lowered, "refused", {"ZINE-07": {"taken": 7, "qty": 4}})
    [(kit, again)] = allocations.step()
    assert (kit, qty_in(again), json.loads(again)["seq"]) == (KIT_A, {"ZINE-07": 10}, 3)
    row = allocations.move(move)
    assert row["state"] == "refused"
    assert row["reason"] == "kit kit-00000 refused: ZINE-07 sold or held 7, allocation 4"
    # The answer to an older manifest, or garbage, changes nothing.
    answer(allocations, KIT_A, lowered)
    for garbage in (b"", b"[]", b'{"seq": "x"}', b'{"seq": 3, "result": "maybe"}', b"x" * 5000):
        allocations.answered(KIT_A, garbage)
    assert allocations.step() == []
    result = preflight(ledger, now=0.0)
    assert "kit kit-00000: manifest #3 sent" in "\n".join(result.problems)
    answer(allocations, KIT_A, again)
    assert "manifest #3 applied" in preflight(ledger, now=0.0).text()


def test_preflight_says_ready_only_when_every_kit_is_heard_applied_and_within_its_allocation(
        ledger: Ledger) -> None:
    allocations = Allocations(ledger.db)
    for kit, n in ((KIT_A, 8), (KIT_B, 12)):
        allocations.request("", kit, "ZINE-07", n)
        answer(allocations, kit, allocations.step()[0][1])
        allocations.step()
    heard = Heard("dropkit")
    for kit in (KIT_A, KIT_B):
        heard.take(f"dropkit/{kit}/status", b"online", 1000.0)
        heard.take(f"dropkit/{kit}/telemetry/power", b'{"queue_depth": 0, "mode": "online"}',
                   1000.0)
    heard.flush(ledger.db)
    result = preflight(ledger, now=1010.0)
    assert result.ready, result.text()
    assert result.text().splitlines()[-1] == "verdict: READY"
    assert "  ZINE-07: 20; kit-00000 8, kit-00001 12; 0; 0" in result.lines
    assert "  PIN-LOGO: 5; none; 5; 0" in result.lines
    # Stale, offline, a queue, a sale beyond the allocation: each named.
    heard.take(f"dropkit/{KIT_B}/status", b"offline", 1020.0)
    heard.take(f"dropkit/{KIT_A}/telemetry/power", b'{"queue_depth": 4, "mode": "offline"}',
               1020.0)
    heard.flush(ledger.db)
    record_sales(ledger, KIT_A, 9)
    result = preflight(ledger, now=1075.0)
    assert not result.ready
    assert result.problems == [
        "kit kit-00000: 4 message(s) not relayed yet",
        "kit kit-00000: ZINE-07: sold 9, allocated 8",
        "kit kit-00001: not heard for 75 s"]
    assert result.text().splitlines()[-1] == "verdict: NOT READY (3 problem(s))"


def test_a_move_whose_manifest_a_kit_could_not_take_is_refused(ledger: Ledger,
                                                                 tmp_path: Path) -> None:
    """A kit's manifest from HQ must fit in the largest packet the kit takes (the broker would
    drop it for the kit, and the move would wait for an answer for ever): the move that would
    make it bigger is refused, saying so, and nothing is published for it."""
    names = [(f"LONG-{n:03}", f"Limited print no. {n}: " + "a long title " * 13, 500, 1)
             for n in range(120)]
    ledger.load_stock(read_manifest(write_manifest(tmp_path / "wide.toml", names)))
    allocations = Allocations(ledger.db)
    given = 0
    for sku, *_ in names:
        move = allocations.request("", KIT_A, sku, 1)
        published = allocations.step()
        if allocations.move(move)["state"] == "refused":
            break
        [(kit, payload)] = published
        assert len(payload) + len(f"dropkit/{kit}/manifest") < MAX_PACKET_BYTES
        answer(allocations, kit, payload)
        assert allocations.step() == [] and allocations.move(move)["state"] == "done"
        given += 1
    else:
        raise AssertionError("every move went through")
    assert published == [] and 50 < given < 120
    assert re.fullmatch(rf"kit {KIT_A}'s manifest would be 1\d{{4}} bytes with {given + 1} "
                        rf"items: a kit takes a message of {MAX_PACKET_BYTES} bytes at most",
                        allocations.move(move)["reason"]), allocations.move(move)["reason"]
    assert len(allocations.published()[0][1]) < MAX_PACKET_BYTES


def test_what_hq_heard_stays_to_be_written_when_the_ledger_fails(tmp_path: Path) -> None:
    """The ledger's connection drops while HQ writes what it heard of the kits: it is written
    at the next flush (a kit's ``offline`` is said once, and retained, so it would be lost)."""
    with postgres_database() as url:
        ledger = Ledger(url)
        try:
            heard = Heard("dropkit")
            heard.take(f"dropkit/{KIT_A}/status", b"online", 10.0)
            heard.flush(ledger.db)
            heard.take(f"dropkit/{KIT_A}/status", b"offline", 20.0)
            failed: list[BaseException] = []

            def flush() -> None:
                try:
                    heard.flush(ledger.db)
                except ledger.db.transient as exc:
                    failed.append(exc)

            with holding(url, "SELECT * FROM kits WHERE kit_id = ? FOR UPDATE", KIT_A):
                flusher = threading.Thread(target=flush)
                flusher.start()
                cut_off_when_blocked(url, "INSERT INTO kits")
                flusher.join(10)
            assert len(failed) == 1, "the flush failed"
            heard.flush(ledger.db)
            assert query_ledger(url, "SELECT status, status_at FROM kits") == [("offline", 20.0)]
            assert heard.changed() == []
        finally:
            ledger.close()


def test_the_kit_takes_an_allocation_by_the_rule_of_a_staff_load(tmp_path: Path) -> None:
    db = open_db(tmp_path / "kit.db")
    for n in range(3):
        sell(db, f"order-{n}", n)

    def allocation(seq: int, qty: int) -> bytes:
        return json.dumps({"seq": seq, "manifest": {"version": f"hq-{seq}", "items": [
            {"sku": "ZINE-07", "name": "Zine no. 7", "price_cents": 800, "qty": qty}]}}).encode()

    first = take_allocation(db, *parse_allocation(allocation(1, 5)), "t")
    assert (first["result"], first["changed"], first["version"]) == ("applied", True, "hq-1")
    below = take_allocation(db, *parse_allocation(allocation(2, 2)), "t")
    assert (below["result"], below["changed"]) == ("refused", False)
    assert below["conflict"] == {"ZINE-07": {"taken": 3, "qty": 2}} and below["version"] == "hq-1"
    # Sent again (the broker does at every connection): answered as before, not applied.
    assert take_allocation(db, *parse_allocation(allocation(2, 9)), "t") == {**below,
                                                                           "again": True}
    assert take_allocation(db, *parse_allocation(allocation(1, 9)), "t")["seq"] == 2
    items = dict(db.execute("SELECT sku, allocated FROM items WHERE active = 1").fetchall())
    assert items == {"ZINE-07": 5}  # the pins were left out of HQ's manifest: not on sale
    for garbage in (b"not json", b"[]", b'{"seq": 0, "manifest": {}}',
                    b'{"seq": 1, "manifest": {"version": "x", "items": []}}', b"{" * 20000):
        with pytest.raises(ManifestError):
            parse_allocation(garbage)
