"""How orders and the manifest look to the API, the printer and the uplink: read-only views."""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime
from typing import Any

from agent.core.manifest import current_manifest


def order_view(db: sqlite3.Connection, order_id: str) -> dict[str, Any] | None:
    """The order as the API shows it, or None.

    ``number`` is the order's number on the till and on its receipt: 1, 2, 3 in the order of
    their sales (the store numbers each order as it is written, ``agent/store/schema.py``),
    without the gaps of ``receipt.seq``, which voids and refunds take as well (the chain
    numbers every link, ``number`` only the orders).
    """
    row = db.execute(
        "SELECT o.*, r.hash FROM orders o JOIN receipts r ON r.seq = o.seq WHERE o.order_id = ?",
        (order_id,)).fetchone()
    if row is None:
        return None
    lines = [{"sku": line["sku"], "name": line["name"], "qty": line["qty"],
              "price_cents": line["price_cents"],
              "amount_cents": line["qty"] * line["price_cents"]}
             for line in db.execute("SELECT sku, name, qty, price_cents FROM order_lines "
                                    "WHERE order_id = ? ORDER BY line_no", (order_id,))]
    return {"order_id": row["order_id"], "number": row["number"], "status": row["status"],
            "created_at": row["created_at"], "clock_synced": bool(row["clock_synced"]),
            "updated_at": row["updated_at"],
            "lines": lines, "total_cents": row["total_cents"],
            "payment": {"method": row["payment_method"], "status": row["payment_status"]},
            "receipt": {"seq": row["seq"], "hash": row["hash"]}}


def recent_orders(db: sqlite3.Connection, limit: int) -> list[dict[str, Any]]:
    ids = [r[0] for r in db.execute("SELECT order_id FROM orders ORDER BY seq DESC LIMIT ?",
                                    (limit,))]
    return [view for view in (order_view(db, i) for i in ids) if view is not None]


def availability(db: sqlite3.Connection) -> dict[str, int]:
    """What is left of each item on sale (neither sold nor held): ``{sku: available}``."""
    return {r["sku"]: r["allocated"] - r["sold"] - r["held"] for r in db.execute(
        "SELECT sku, allocated, sold, held FROM items WHERE active = 1 ORDER BY position, sku")}


def _opens_in_s(opens_at: str | None, now: str | None) -> int:
    if opens_at is None or now is None:
        return 0
    wait = (datetime.fromisoformat(opens_at) - datetime.fromisoformat(now)).total_seconds()
    return max(0, math.ceil(wait))


def manifest_view(db: sqlite3.Connection, now: str | None = None) -> dict[str, Any]:
    """The items on sale; with ``now`` (the kit's clock), each one's ``opens_in_s``."""
    loaded = current_manifest(db)
    items = [{"sku": r["sku"], "name": r["name"], "price_cents": r["price_cents"],
              "available": r["allocated"] - r["sold"] - r["held"], "allocated": r["allocated"],
              "sold": r["sold"], "held": r["held"],
              "limit_per_customer": r["limit_per_customer"], "opens_at": r["opens_at"],
              "opens_in_s": _opens_in_s(r["opens_at"], now)}
             for r in db.execute("SELECT * FROM items WHERE active = 1 ORDER BY position, sku")]
    return {"version": loaded["version"] if loaded else None,
            "hash": loaded["content_hash"] if loaded else None,
            "loaded_at": loaded["loaded_at"] if loaded else None,
            "items": items}
