"""The reservation rules (agent/core/holds.py) and the drop's manifest keys, on a real SQLite
store, with the kit's stamps chosen by the test."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tomllib

import pytest

from agent.core import holds, printjobs
from agent.core.errors import Refusal
from agent.core.manifest import (
    Item,
    Manifest,
    ManifestConflict,
    ManifestError,
    apply_manifest,
    parse_manifest,
)
from agent.core.orders import OrderRequest
from tests.core.sales_helpers import KIT, at, moment

HOLD_S = 600.0
PHONE = holds.Customer("phone-0001", "10.42.0.10")


def hold(db: sqlite3.Connection, order_id: str, qty: int = 1, when: float = 0.0,
         customer: holds.Customer = PHONE, sku: str = "ZINE-07") -> dict:
    view, created = holds.place_hold(db, OrderRequest(order_id, ((sku, qty),), "cash"),
                                     customer, 1, "trace", moment(when), HOLD_S)
    assert created
    return view


def left(db: sqlite3.Connection, sku: str = "ZINE-07") -> int:
    return db.execute("SELECT allocated - sold - held FROM items WHERE sku = ?",
                      (sku,)).fetchone()[0]


def test_a_manifest_without_the_drop_keys_keeps_its_hash() -> None:
    """The hash is SHA-256 of the canonical JSON of what the manifest says (docs/config.md),
    worked out here with json alone: the new optional keys change nothing when absent."""
    manifest = parse_manifest({"version": "v1", "items": [
        {"sku": "A", "name": "A", "price_cents": 100, "qty": 3}]})
    said = {"items": [{"name": "A", "price_cents": 100, "qty": 3, "sku": "A"}], "version": "v1"}
    expected = hashlib.sha256(json.dumps(said, sort_keys=True, separators=(",", ":"))
                              .encode()).hexdigest()
    assert manifest.content_hash == expected
    dropped = parse_manifest({"version": "v1", "items": [
        {"sku": "A", "name": "A", "price_cents": 100, "qty": 3, "limit_per_customer": 1}]})
    assert dropped.content_hash != expected


def test_opens_at_is_a_time_with_its_zone() -> None:
    doc = tomllib.loads('version = "v"\n[[items]]\nsku = "A"\nname = "A"\nprice_cents = 1\n'
                        'qty = 1\nopens_at = 2026-11-28T10:00:00+01:00\n')
    assert parse_manifest(doc).items[0].opens_at == "2026-11-28T09:00:00.000+00:00"
    text = {"version": "v", "items": [{"sku": "A", "name": "A", "price_cents": 1, "qty": 1,
                                       "opens_at": "2026-11-28T09:00:00Z"}]}
    assert parse_manifest(text).items[0].opens_at == "2026-11-28T09:00:00.000+00:00"
    for bad in ("2026-11-28T10:00:00", "tomorrow", 1764320400, "2026-13-01T00:00:00+00:00"):
        text["items"][0]["opens_at"] = bad
        with pytest.raises(ManifestError, match="opens_at"):
            parse_manifest(text)
    text["items"][0].pop("opens_at")
    for bad in (0, -1, True, 1.5):
        text["items"][0]["limit_per_customer"] = bad
        with pytest.raises(ManifestError, match="limit_per_customer"):
            parse_manifest(text)


def test_a_hold_takes_stock_and_running_out_gives_it_back(db: sqlite3.Connection) -> None:
    view = hold(db, "order-0001", qty=3)
    assert (view["status"], view["payment"]["status"]) == ("held", "unpaid")
    assert left(db) == 97
    assert holds.next_expiry(db) == HOLD_S
    assert holds.expire_due(db, moment(HOLD_S - 0.001)) == []
    assert holds.customer_view(db, "order-0001", HOLD_S)["status"] == "expired"  # on read
    assert holds.expire_due(db, moment(HOLD_S)) == ["order-0001"]
    assert left(db) == 100 and holds.next_expiry(db) is None
    with pytest.raises(Refusal) as refused:
        holds.settle_hold(db, "order-0001", "cash", KIT, moment(HOLD_S + 1))
    assert refused.value.code == "hold_expired"


def test_settling_sells_at_the_reserved_price(db: sqlite3.Connection) -> None:
    hold(db, "order-0001", qty=2)
    apply_manifest(db, Manifest("t-2", (Item("ZINE-07", "Zine no. 7", 900, 100),
                                        Item("PIN-LOGO", "Enamel pin", 600, 100))),
                   "test", at(1))
    sale = holds.settle_hold(db, "order-0001", "card", KIT, moment(10))
    assert sale["total_cents"] == 1600 and sale["payment"] == {"method": "card",
                                                                "status": "paid"}
    assert tuple(db.execute("SELECT sold, held FROM items WHERE sku = 'ZINE-07'")
                 .fetchone()) == (2, 0)
    # Paid: the paper rule calls for its receipt (the caller queues it in this transaction).
    assert len(printjobs.queue_due(db, "order-0001", at(10))) == 1
    assert [tuple(row) for row in db.execute("SELECT kind FROM print_jobs")] == [("receipt",)]
    assert holds.expire_due(db, moment(HOLD_S * 2)) == []  # a sale never runs out


def test_a_live_code_is_never_given_twice(db: sqlite3.Connection) -> None:
    first = hold(db, "order-0001")["reservation"]["code"]
    with pytest.raises(sqlite3.IntegrityError):  # the store itself refuses a second live one
        db.execute("UPDATE holds SET code = ? WHERE order_id = ?",
                   (first, hold(db, "order-0002", customer=holds.Customer(None, "b"))
                    ["order_id"]))
    assert holds.find_code(db, first) == "order-0001"
    assert holds.pickup_code(f"pickup-{first.lower()}") == first


def test_held_units_count_against_a_new_manifest(db: sqlite3.Connection) -> None:
    hold(db, "order-0001", qty=5)
    with pytest.raises(ManifestConflict) as conflict:
        apply_manifest(db, Manifest("t-2", (Item("ZINE-07", "Zine no. 7", 800, 4),)),
                       "test", at(1))
    assert conflict.value.skus == {"ZINE-07": (5, 4)}
    # Left out of the next manifest, the item keeps what is held; the hold can still end.
    apply_manifest(db, Manifest("t-3", (Item("PIN-LOGO", "Enamel pin", 600, 100),)),
                   "test", at(2))
    assert tuple(db.execute("SELECT allocated, held, active FROM items WHERE sku = 'ZINE-07'")
                 .fetchone()) == (5, 5, 0)
    holds.expire_due(db, moment(HOLD_S))
    assert tuple(db.execute("SELECT allocated, held FROM items WHERE sku = 'ZINE-07'")
                 .fetchone()) == (5, 0)
