"""A kit's store on a real SQLite file for the rules in agent/core, and sales made on it.

Time is an ISO string the tests choose (``at(seconds)`` after a fixed T0), as the kit writes it.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

from agent import store
from agent.core import outbox
from agent.core.clock import Moment
from agent.core.manifest import Item, Manifest, apply_manifest
from agent.core.orders import OrderRequest, place_order

KIT = "kit-test"
T0 = datetime.fromisoformat("2025-06-01T10:00:00.000+00:00")


def at(seconds: float) -> str:
    """The kit's timestamp ``seconds`` after T0, written as the kit writes it."""
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def moment(seconds: float, synced: bool = True) -> Moment:
    """The kit's stamp ``seconds`` after T0: the wall clock's label and the kit second."""
    return Moment(at(seconds), seconds, synced)


def open_db(path: Path) -> sqlite3.Connection:
    """A migrated store with two items of 100 each on sale."""
    connection = store.connect(path)
    store.migrate(connection)
    apply_manifest(connection, Manifest("t-1", (Item("ZINE-07", "Zine no. 7", 800, 100),
                                                Item("PIN-LOGO", "Enamel pin", 600, 100))),
                   "test", at(-60))
    return connection


def sell(db: sqlite3.Connection, order_id: str, when: float, qty: int = 1,
         method: str = "cash") -> dict:
    """Sell ``qty`` zines through the real rules; returns the order's view."""
    view, created = place_order(db, OrderRequest(order_id, (("ZINE-07", qty),), method), KIT,
                                f"trace-{order_id}", moment(when))
    assert created
    return view


def relay(db: sqlite3.Connection, order_id: str, when: float) -> None:
    """What the uplink does after the broker's PUBACK for the order's pending sale message."""
    ids = [row["id"] for row in db.execute(
        "SELECT id FROM outbox WHERE kind = 'sale' AND key = ? AND relayed_at IS NULL",
        (order_id,))]
    assert ids, f"no pending sale message for {order_id}"
    outbox.mark_relayed(db, ids, moment(when))
