"""Customers' reservations: an order from the shop page holds stock until staff take the payment.

A customer's phone cannot pay. Its order (``POST /api/orders`` without the staff credential)
is a *hold*: the units are taken from what is on sale (``items.held``), the order waits with
payment ``unpaid`` for ``[orders] hold_minutes``, and the answer carries a pickup code. Staff
find it by that code (typed, or its QR scanned off the customer's screen), take cash or card,
and :func:`settle_hold` makes it a sale through the same rules as a sale at the till: its
receipt link, outbox message and print job, in the same transaction. A hold not settled in
time expires (:func:`expire_due`): its units are on sale again at once. Nothing of a hold
reaches the receipt chain or HQ; only the sale it may become does.

Expiry counts kit seconds (:mod:`agent.core.clock`), so a wall clock set mid-drop never ends a
hold early, and a restart keeps the time a hold has left. Every decision (a new hold, a
settlement) first expires what is due in its own transaction, and a view computes expiry on
read, so neither ever trusts a hold whose time is up.

The limits per customer (``limit_per_customer`` of an item) count, per SKU, the units of the
holds that are live or settled of this device (the shop page's id) *or* this client address.

Pure functions over the writer's (or reader's) connection, as :mod:`agent.core.orders`.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from agent.core.clock import Moment
from agent.core.errors import Refusal
from agent.core.orders import OrderRequest, priced_lines, record_sale
from agent.core.views import order_view

CODE_ALPHABET = "ACDEFHJKMNPRTUVWXY3479"
"""Letters and digits nobody misreads or mistypes: no 0/O/Q/D-like pairs left but D, no 1/I/L,
2/Z, 5/S, 6/G, 8/B."""
CODE_LENGTH = 6
QR_PREFIX = "PICKUP-"
"""A pickup QR holds ``PICKUP-`` and the code, so a scan can never be taken for a SKU."""
LIVE = "held"
TAKEN = ("held", "settled")
"""The states whose units count against a customer's limit."""


@dataclass(frozen=True)
class Customer:
    """Who a reservation is for, as the limits count them."""

    device: str | None
    client: str


def pickup_code(text: str) -> str | None:
    """A typed or scanned pickup code in its canonical form, or None when it is not one.

        >>> pickup_code("pickup-k7m 3xa"), pickup_code("K7M-3XA"), pickup_code("ZINE-07")
        ('K7M3XA', 'K7M3XA', None)
    """
    code = text.strip().upper()
    code = code.removeprefix(QR_PREFIX).replace(" ", "").replace("-", "")
    if len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET):
        return code
    return None


def _new_code(db: sqlite3.Connection) -> str:
    """A random code no live hold has (random, so one customer cannot guess another's)."""
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if db.execute("SELECT 1 FROM holds WHERE code = ? AND state = ?",
                      (code, LIVE)).fetchone() is None:
            return code


def _lines(db: sqlite3.Connection, order_id: str) -> list[dict[str, Any]]:
    return [dict(row) for row in db.execute(
        "SELECT sku, name, qty, price_cents FROM hold_lines WHERE order_id = ? ORDER BY line_no",
        (order_id,))]


def _reservation(row: sqlite3.Row, now_ks: float) -> dict[str, Any]:
    state = row["state"]
    if state == LIVE and row["expires_ks"] <= now_ks:
        state = "expired"  # the sweep has not got to it yet: it is over all the same
    return {"code": row["code"], "qr_text": QR_PREFIX + row["code"], "state": state,
            "expires_at": row["expires_at"],
            "expires_in_s": round(max(0.0, row["expires_ks"] - now_ks), 1) if state == LIVE
            else 0, "arrival": row["arrival"]}


def customer_view(db: sqlite3.Connection, order_id: str, now_ks: float) -> dict[str, Any] | None:
    """The order as ``GET /api/orders/{id}`` shows it: a sale (with its ``reservation`` when it
    was one), or a hold not (yet) paid: status ``held``, ``expired`` or ``cancelled``, payment
    ``unpaid``, no receipt. None when there is neither."""
    hold = db.execute("SELECT * FROM holds WHERE order_id = ?", (order_id,)).fetchone()
    sale = order_view(db, order_id)
    if hold is None:
        return sale
    reservation = _reservation(hold, now_ks)
    if sale is not None:
        return {**sale, "reservation": reservation}
    lines = [{**line, "amount_cents": line["qty"] * line["price_cents"]}
             for line in _lines(db, order_id)]
    return {"order_id": order_id, "status": reservation["state"],
            "created_at": hold["created_at"], "updated_at": hold["ended_at"] or
            hold["created_at"], "lines": lines, "total_cents": hold["total_cents"],
            "payment": {"method": None, "status": "unpaid"}, "receipt": None,
            "reservation": reservation}


def _return_stock(db: sqlite3.Connection, order_id: str) -> None:
    for line in _lines(db, order_id):
        db.execute("UPDATE items SET held = held - ? WHERE sku = ?", (line["qty"], line["sku"]))


def _end(db: sqlite3.Connection, order_id: str, state: str, now: str) -> None:
    db.execute("UPDATE holds SET state = ?, ended_at = ? WHERE order_id = ?",
               (state, now, order_id))


def expire_due(db: sqlite3.Connection, at: Moment) -> list[str]:
    """End every live hold whose time is up, its units back on sale; returns their ids."""
    due = [row["order_id"] for row in db.execute(
        "SELECT order_id FROM holds WHERE state = ? AND expires_ks <= ? ORDER BY expires_ks",
        (LIVE, at.ks))]
    for order_id in due:
        _return_stock(db, order_id)
        _end(db, order_id, "expired", at.iso)
    return due


def next_expiry(db: sqlite3.Connection) -> float | None:
    """The kit second the next live hold expires at, or None with none live."""
    return db.execute("SELECT min(expires_ks) FROM holds WHERE state = ?", (LIVE,)).fetchone()[0]


def _check_limits(db: sqlite3.Connection, lines: list[dict[str, Any]],
                  customer: Customer) -> None:
    for line in lines:
        limit = line["limit_per_customer"]
        if limit is None:
            continue
        taken = db.execute(
            "SELECT coalesce(sum(l.qty), 0) FROM hold_lines l JOIN holds h USING (order_id) "
            "WHERE l.sku = ? AND h.state IN (?, ?) AND (h.device = ? OR h.client = ?)",
            (line["sku"], *TAKEN, customer.device, customer.client)).fetchone()[0]
        if taken + line["qty"] > limit:
            already = f"; this phone has {taken} reserved already" if taken else ""
            raise Refusal("limit_reached", f"{line['name']}: at most {limit} per customer"
                          f"{already}", sku=line["sku"], limit=limit, reserved=taken)


def place_hold(db: sqlite3.Connection, request: OrderRequest, customer: Customer,
               arrival: int, trace_id: str, at: Moment,
               hold_s: float) -> tuple[dict[str, Any], bool]:
    """Reserve the order for ``hold_s`` kit seconds, or answer the reservation made for a
    retried ``order_id`` (whatever it has become since: held, paid, expired).

    ``arrival`` is the kit's arrival number of the request (docs/stall.md, "A fair drop").
    Returns ``(view, created)``. Raises ``order_id_reused``, ``unknown_sku``, ``not_open``,
    ``sold_out`` or ``limit_reached``.
    """
    expire_due(db, at)
    existing = db.execute("SELECT fingerprint FROM holds WHERE order_id = ?",
                          (request.order_id,)).fetchone()
    if existing is not None or order_view(db, request.order_id) is not None:
        if existing is None or existing["fingerprint"] != request.fingerprint:
            raise Refusal("order_id_reused", "this order_id was already used for a "
                          "different order", order_id=request.order_id)
        return customer_view(db, request.order_id, at.ks), False  # type: ignore[return-value]
    lines = priced_lines(db, request, at.iso)
    _check_limits(db, lines, customer)
    expires_at = (datetime.fromisoformat(at.iso) + timedelta(seconds=hold_s)).isoformat(
        timespec="milliseconds")
    db.execute(
        "INSERT INTO holds (order_id, code, fingerprint, state, device, client, arrival, "
        "total_cents, trace_id, created_at, created_ks, expires_at, expires_ks) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (request.order_id, _new_code(db), request.fingerprint, LIVE, customer.device,
         customer.client, arrival, sum(li["qty"] * li["price_cents"] for li in lines),
         trace_id, at.iso, at.ks, expires_at, at.ks + hold_s))
    for n, line in enumerate(lines):
        db.execute("INSERT INTO hold_lines (order_id, line_no, sku, name, qty, price_cents) "
                   "VALUES (?, ?, ?, ?, ?, ?)", (request.order_id, n, line["sku"],
                                                 line["name"], line["qty"],
                                                 line["price_cents"]))
        db.execute("UPDATE items SET held = held + ? WHERE sku = ?", (line["qty"], line["sku"]))
    return customer_view(db, request.order_id, at.ks), True  # type: ignore[return-value]


def _live_hold(db: sqlite3.Connection, order_id: str, at: Moment) -> sqlite3.Row:
    expire_due(db, at)
    row = db.execute("SELECT * FROM holds WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        raise Refusal("not_found", f"no reservation {order_id}", order_id=order_id)
    if row["state"] == "expired":
        raise Refusal("hold_expired", f"the reservation {row['code']} ran out at "
                      f"{row['ended_at']}; its items went back on sale: reserve again",
                      order_id=order_id, pickup=row["code"])
    if row["state"] == "settled":
        raise Refusal("payment_settled", f"the reservation {row['code']} is paid already",
                      order_id=order_id)
    if row["state"] != LIVE:
        raise Refusal("order_closed", f"the reservation {row['code']} was cancelled",
                      order_id=order_id, status=row["state"])
    return row


def is_hold(db: sqlite3.Connection, order_id: str) -> bool:
    """True when ``order_id`` is a reservation not (yet) a sale: its payment is staff's to
    take with :func:`settle_hold`, its voiding :func:`cancel_hold`."""
    return db.execute("SELECT 1 FROM holds WHERE order_id = ? AND state != 'settled'",
                      (order_id,)).fetchone() is not None


def settle_hold(db: sqlite3.Connection, order_id: str, method: str, kit_id: str,
                at: Moment) -> dict[str, Any]:
    """Staff took the payment (``cash``, or ``card`` the terminal approved): the reservation
    becomes a paid sale at the prices it was reserved at, its units sold. The caller queues
    its receipt in the same transaction (:func:`agent.core.printjobs.queue_due`)."""
    row = _live_hold(db, order_id, at)
    lines = _lines(db, order_id)
    for line in lines:
        db.execute("UPDATE items SET held = held - ?, sold = sold + ? WHERE sku = ?",
                   (line["qty"], line["qty"], line["sku"]))
        db.execute("INSERT INTO stock_ledger (sku, field, delta, reason, order_id, at) "
                   "VALUES (?, 'sold', ?, 'sale', ?, ?)", (line["sku"], line["qty"],
                                                          order_id, at.iso))
    _end(db, order_id, "settled", at.iso)
    record_sale(db, order_id, row["fingerprint"], lines, method, "paid", kit_id,
                row["trace_id"], at)
    return customer_view(db, order_id, at.ks)  # type: ignore[return-value]


def cancel_hold(db: sqlite3.Connection, order_id: str, at: Moment) -> dict[str, Any]:
    """Staff let a reservation go (the customer left): its units are on sale again at once."""
    _live_hold(db, order_id, at)
    _return_stock(db, order_id)
    _end(db, order_id, "cancelled", at.iso)
    return customer_view(db, order_id, at.ks)  # type: ignore[return-value]


def find_code(db: sqlite3.Connection, code: str) -> str | None:
    """The order id of the reservation with ``code``: the live one, else the latest that had
    it (a code is unique among live holds only)."""
    row = db.execute("SELECT order_id FROM holds WHERE code = ? "
                     "ORDER BY state = ? DESC, created_ks DESC LIMIT 1", (code, LIVE)).fetchone()
    return None if row is None else row["order_id"]


def live_holds(db: sqlite3.Connection, now_ks: float, limit: int) -> list[dict[str, Any]]:
    """The reservations waiting for their payment, soonest to expire first."""
    ids = [row["order_id"] for row in db.execute(
        "SELECT order_id FROM holds WHERE state = ? AND expires_ks > ? ORDER BY expires_ks "
        "LIMIT ?", (LIVE, now_ks, limit))]
    return [view for view in (customer_view(db, i, now_ks) for i in ids) if view is not None]
