"""The sales rules: what an order may be, what selling it changes, and how it is undone.

Every change is one function of the writer's connection, run by :class:`agent.store.Store` in
its transaction, so the stock check, the sale, its receipt link and its outbox message commit
together or not at all. Stock is checked and taken in one ``UPDATE ... WHERE`` on the single
writer, so two tablets can never both buy the last unit.
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

from agent.core import outbox, receipts
from agent.core.clock import Moment
from agent.core.errors import Refusal, invalid
from agent.core.manifest import valid_sku
from agent.core.views import order_view

ORDER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{7,63}")
PAYMENT_METHODS = ("cash", "card")
# cash is settled at the stall; a card payment waits for staff to confirm the terminal's answer.
INITIAL_PAYMENT = {"cash": "paid", "card": "pending"}
CLOSED = ("voided", "refunded")


@dataclass(frozen=True)
class OrderRequest:
    order_id: str
    lines: tuple[tuple[str, int], ...]
    payment_method: str
    device: str | None = None
    """The customer's device id (their shop page's own), for the limits per customer; not
    part of what makes a retry the same order."""

    @property
    def fingerprint(self) -> str:
        """What makes a retry the same order: its lines, in any order, and payment method.

            >>> a = OrderRequest("ord-0001", (("A", 1), ("B", 2)), "cash")
            >>> a.fingerprint == OrderRequest("ord-0001", (("B", 2), ("A", 1)), "cash").fingerprint
            True
        """
        body = receipts.canonical_json({"lines": sorted(self.lines),
                                        "payment": self.payment_method})
        return hashlib.sha256(body.encode()).hexdigest()


def valid_order_id(text: object) -> TypeGuard[str]:
    """``text`` is an order id, whole (``"ord-0001\\n"`` is not one):

        >>> valid_order_id("6f1c7a9e-2b4d"), valid_order_id("6f1c7a9e-2b4d\\n")
        (True, False)
    """
    return isinstance(text, str) and ORDER_ID.fullmatch(text) is not None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_order_request(data: object, max_lines: int, max_qty: int) -> OrderRequest:
    """Check a client's order body; raises an ``invalid`` :class:`Refusal` naming the field."""
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object")
    unknown = set(data) - {"order_id", "lines", "payment", "device"}
    if unknown:
        raise invalid(f"unknown field {sorted(unknown)[0]!r}")
    order_id = data.get("order_id")
    if not valid_order_id(order_id):
        raise invalid("order_id must be the client's id: 8 to 64 letters, digits, '-' or '_' "
                      "(a UUID fits)")
    lines = data.get("lines")
    if not isinstance(lines, list) or not 1 <= len(lines) <= max_lines:
        raise invalid(f"lines must be a list of 1 to {max_lines} lines")
    parsed, seen = [], set()
    for n, line in enumerate(lines):
        if not isinstance(line, dict) or set(line) != {"sku", "qty"}:
            raise invalid(f"lines[{n}] must be an object with exactly 'sku' and 'qty'")
        sku, qty = line["sku"], line["qty"]
        if not valid_sku(sku):
            raise invalid(f"lines[{n}].sku must be 1 to 64 letters, digits or -_.:/+")
        if not _whole(qty) or not 1 <= qty <= max_qty:
            raise invalid(f"lines[{n}].qty must be a whole number from 1 to {max_qty}")
        if sku in seen:
            raise invalid(f"lines[{n}].sku {sku} appears twice; give one line per SKU")
        seen.add(sku)
        parsed.append((sku, qty))
    payment = data.get("payment", {"method": "cash"})
    if (not isinstance(payment, dict) or set(payment) != {"method"}
            or payment["method"] not in PAYMENT_METHODS):
        raise invalid("payment must be {\"method\": \"cash\"} or {\"method\": \"card\"}")
    device = data.get("device")
    if device is not None and not valid_order_id(device):
        raise invalid("device must be the shop page's device id: 8 to 64 letters, digits, "
                      "'-' or '_'")
    return OrderRequest(order_id, tuple(parsed), payment["method"], device)


# -- changing --------------------------------------------------------------------------------

def _move_stock(db: sqlite3.Connection, sku: str, sold_delta: int, reason: str,
                order_id: str, now: str) -> None:
    db.execute("UPDATE items SET sold = sold + ? WHERE sku = ?", (sold_delta, sku))
    db.execute("INSERT INTO stock_ledger (sku, field, delta, reason, order_id, at) "
               "VALUES (?, 'sold', ?, ?, ?, ?)", (sku, sold_delta, reason, order_id, now))


def _stored_request(db: sqlite3.Connection, order_id: str, order: sqlite3.Row) -> OrderRequest:
    """The request a stored order was sold for, from its lines: what a retry is checked against
    when the stored fingerprint differs (one stored before fingerprints ignored line order)."""
    lines = db.execute("SELECT sku, qty FROM order_lines WHERE order_id = ? ORDER BY line_no",
                       (order_id,)).fetchall()
    return OrderRequest(order_id, tuple((line["sku"], line["qty"]) for line in lines),
                        order["payment_method"])


def _seconds_until(when: str, now: str) -> float:
    return (datetime.fromisoformat(when) - datetime.fromisoformat(now)).total_seconds()


def priced_lines(db: sqlite3.Connection, request: OrderRequest, now: str) -> list[dict[str, Any]]:
    """The request's lines as the manifest prices them now, each checked: on sale (opened) and
    not more than is left. Raises ``unknown_sku``, ``not_open`` or ``sold_out``."""
    lines = []
    for sku, qty in request.lines:
        item = db.execute("SELECT name, price_cents, opens_at, limit_per_customer, "
                          "allocated - sold - held AS available FROM items "
                          "WHERE sku = ? AND active = 1", (sku,)).fetchone()
        if item is None:
            raise Refusal("unknown_sku", f"{sku} is not in the kit's manifest", sku=sku)
        if item["opens_at"] is not None and (wait := _seconds_until(item["opens_at"], now)) > 0:
            opens = datetime.fromisoformat(item["opens_at"]).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise Refusal("not_open", f"{item['name']} goes on sale at {opens} (in "
                          f"{math.ceil(wait)} s by the kit's clock); nothing was taken",
                          sku=sku, opens_at=item["opens_at"], opens_in_s=math.ceil(wait))
        if item["available"] < qty:
            raise Refusal("sold_out", f"{sku}: {item['available']} left, {qty} asked",
                          sku=sku, available=item["available"])
        lines.append({"sku": sku, "name": item["name"], "qty": qty,
                      "price_cents": item["price_cents"],
                      "limit_per_customer": item["limit_per_customer"]})
    return lines


def record_sale(db: sqlite3.Connection, order_id: str, fingerprint: str,
                lines: list[dict[str, Any]], method: str, payment_status: str, kit_id: str,
                trace_id: str, at: Moment) -> dict[str, Any]:
    """Write a sale whose stock is already taken: its receipt link, the order and its lines
    and the outbox message; returns its view. The caller queues its paper in the same
    transaction (:func:`agent.core.printjobs.queue_due`).

    The outbox message is a ``sale`` of ``agent/schemas/orders.schema.json``: the order's view
    with ``kit_id`` and ``trace_id``. ``at`` stamps it: the wall clock's label, whether that was
    synced, and the kit second its timers count from.
    """
    now = at.iso
    total = sum(line["qty"] * line["price_cents"] for line in lines)
    signed = [{key: line[key] for key in ("sku", "name", "qty", "price_cents")}
              for line in lines]
    seq, _ = receipts.append(db, "sale", order_id, {
        "kit_id": kit_id, "created_at": now, "lines": signed, "total_cents": total,
        "payment_method": method})
    db.execute(
        "INSERT INTO orders (order_id, seq, fingerprint, created_at, updated_at, total_cents, "
        "payment_method, payment_status, status, trace_id, created_ks, clock_synced) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
        (order_id, seq, fingerprint, now, now, total, method, payment_status, trace_id, at.ks,
         int(at.synced)))
    db.executemany(
        "INSERT INTO order_lines (order_id, line_no, sku, name, qty, price_cents) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [(order_id, n, li["sku"], li["name"], li["qty"], li["price_cents"])
         for n, li in enumerate(signed)])
    view = order_view(db, order_id)
    message = outbox.enqueue(db, "sale", order_id,
                             {"kit_id": kit_id, "trace_id": trace_id, **view},  # type: ignore[dict-item]
                             now)
    # The order's page is in this commit already: the pointer costs no page of its own.
    db.execute("UPDATE orders SET sale_msg_id = ? WHERE order_id = ?", (message, order_id))
    return view  # type: ignore[return-value]


def place_order(db: sqlite3.Connection, request: OrderRequest, kit_id: str, trace_id: str,
                at: Moment) -> tuple[dict[str, Any], bool]:
    """Sell the order (staff's, at the till), or answer the first result for a retried
    ``order_id``.

    Returns ``(order view, created)``; the sale is written by :func:`record_sale`, and the
    caller queues its paper in the same transaction (:func:`agent.core.printjobs.queue_due`),
    so a confirmed sale always has its receipt coming.
    """
    existing = db.execute("SELECT fingerprint, payment_method FROM orders WHERE order_id = ?",
                          (request.order_id,)).fetchone()
    if existing is not None:
        if existing["fingerprint"] != request.fingerprint and \
                _stored_request(db, request.order_id, existing).fingerprint != \
                request.fingerprint:
            raise Refusal("order_id_reused", "this order_id was already used for a "
                          "different order", order_id=request.order_id)
        return order_view(db, request.order_id), False  # type: ignore[return-value]
    if db.execute("SELECT 1 FROM holds WHERE order_id = ?", (request.order_id,)).fetchone():
        raise Refusal("order_id_reused", "this order_id is a customer's reservation: staff "
                      "settle it with its payment", order_id=request.order_id)
    lines = priced_lines(db, request, at.iso)
    for line in lines:
        _move_stock(db, line["sku"], line["qty"], "sale", request.order_id, at.iso)
    view = record_sale(db, request.order_id, request.fingerprint, lines, request.payment_method,
                       INITIAL_PAYMENT[request.payment_method], kit_id, trace_id, at)
    return view, True


def sale_matches_order(db: sqlite3.Connection, entry: dict[str, Any]) -> str:
    """Why a sale's receipt entry no longer matches the stored order, or ''."""
    order = db.execute("SELECT seq, total_cents, payment_method, created_at FROM orders "
                       "WHERE order_id = ?", (entry["order_id"],)).fetchone()
    if order is None:
        return f"its order {entry['order_id']} is missing"
    lines = [dict(r) for r in db.execute("SELECT sku, name, qty, price_cents FROM order_lines "
                                         "WHERE order_id = ? ORDER BY line_no",
                                         (entry["order_id"],))]
    stored = (order["seq"], order["total_cents"], order["payment_method"],
              order["created_at"], lines)
    signed = (entry["seq"], entry.get("total_cents"), entry.get("payment_method"),
              entry.get("created_at"), entry.get("lines"))
    return "" if stored == signed else f"order {entry['order_id']} differs from its receipt"


def _open_order(db: sqlite3.Connection, order_id: str) -> sqlite3.Row:
    row = db.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()
    if row is None:
        raise Refusal("not_found", f"no order {order_id}", order_id=order_id)
    if row["status"] in CLOSED:
        raise Refusal("order_closed", f"order {order_id} is already {row['status']}",
                      order_id=order_id, status=row["status"])
    return row


def _return_stock(db: sqlite3.Connection, order_id: str, reason: str, now: str) -> None:
    for line in db.execute("SELECT sku, qty FROM order_lines WHERE order_id = ?",
                           (order_id,)).fetchall():
        _move_stock(db, line["sku"], -line["qty"], reason, order_id, now)


def _close_order(db: sqlite3.Connection, order_id: str, kind: str, status: str, kit_id: str,
                 now: str, detail: dict[str, Any]) -> dict[str, Any]:
    """Close the order with its own receipt link and outbox message.

    The message is a ``void`` or ``refund`` of ``agent/schemas/orders.schema.json``: ``kit_id``,
    ``order_id``, ``created_at``, the new link as ``receipt`` and ``detail`` (``voids_seq`` and
    ``reason``; ``refunds_seq``, ``restock``, ``reason`` and ``total_cents``).
    """
    seq, link = receipts.append(db, kind, order_id, {"kit_id": kit_id, "created_at": now,
                                                      **detail})
    db.execute("UPDATE orders SET status = ?, updated_at = ? WHERE order_id = ?",
               (status, now, order_id))
    outbox.enqueue(db, kind, order_id, {"kit_id": kit_id, "order_id": order_id, "created_at": now,
                                  "receipt": {"seq": seq, "hash": link}, **detail}, now)
    return order_view(db, order_id)  # type: ignore[return-value]


def void_order(db: sqlite3.Connection, order_id: str, reason: str, kit_id: str,
               now: str) -> dict[str, Any]:
    """Undo a sale whose payment did not go through: its stock is on sale again at once."""
    row = _open_order(db, order_id)
    if row["payment_status"] == "paid":
        raise Refusal("paid", f"order {order_id} is paid; refund it instead of voiding",
                      order_id=order_id)
    if row["payment_status"] == "pending":
        db.execute("UPDATE orders SET payment_status = 'failed' WHERE order_id = ?", (order_id,))
    _return_stock(db, order_id, "void", now)
    return _close_order(db, order_id, "void", "voided", kit_id, now,
                        {"voids_seq": row["seq"], "reason": reason})


def refund_order(db: sqlite3.Connection, order_id: str, restock: bool, reason: str,
                 kit_id: str, now: str) -> dict[str, Any]:
    """Record that the customer got their money back (and the goods back on sale if asked)."""
    row = _open_order(db, order_id)
    if restock:
        _return_stock(db, order_id, "refund", now)
    return _close_order(db, order_id, "refund", "refunded", kit_id, now,
                        {"refunds_seq": row["seq"], "restock": restock, "reason": reason,
                         "total_cents": row["total_cents"]})


def settle_payment(db: sqlite3.Connection, order_id: str, paid: bool,
                   now: str) -> dict[str, Any]:
    """Staff's word on a card payment: the terminal approved it, or it failed."""
    row = _open_order(db, order_id)
    if row["payment_status"] != "pending":
        raise Refusal("payment_settled", f"order {order_id} payment is already "
                      f"{row['payment_status']}", order_id=order_id)
    db.execute("UPDATE orders SET payment_status = ?, updated_at = ? WHERE order_id = ?",
               ("paid" if paid else "failed", now, order_id))
    return order_view(db, order_id)  # type: ignore[return-value]
