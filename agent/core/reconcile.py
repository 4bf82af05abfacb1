"""Reconciliation with HQ: acks settle orders; orders HQ never settles are surfaced, then refunded.

- ``accepted`` marks a sale ``reconciled``; ``rejected`` marks it ``rejected`` and raises an
  event (staff see it; the sale needs a refund or a word with HQ).
- A sale still unsettled ``mismatch_after`` seconds after it was sold raises one ``mismatch``
  event; after ``refund_after`` seconds it becomes ``refund_due`` (staff see it and mark it
  refunded through the refund endpoint).
- A relayed sale with no ack after ``resend_after`` seconds is sent again (a broker that lost it
  after its PUBACK must not lose the sale); HQ drops repeats by order id. And every unanswered
  sale is sent again at once when HQ comes online (:func:`resend_unanswered`; when, the
  uplink decides: :mod:`agent.uplink.fromhq`).

Every age here is in kit seconds (:mod:`agent.core.clock`), which a wall clock set back or
forward does not move.
"""

from __future__ import annotations

import bisect
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from agent.backoff import Backoff
from agent.core import outbox
from agent.core.clock import SEEN_EVERY_KS, Moment, note_seen
from agent.core.views import order_view

OPEN = ("queued", "relayed")
MAX_RESEND_DOUBLINGS = 10  # a lost sale is re-sent at least every 1024 x resend_after


@dataclass(frozen=True)
class Ack:
    order_id: str
    accepted: bool
    reason: str
    trace_id: str


def parse_ack(payload: bytes) -> Ack:
    """An ack from HQ; raises ValueError with what is wrong (garbage is not an ack)."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    order_id, result = data.get("order_id"), data.get("result")
    if not isinstance(order_id, str) or not 0 < len(order_id) <= 64:
        raise ValueError("order_id missing or not a string")
    if result not in ("accepted", "rejected"):
        raise ValueError("result must be accepted or rejected")
    reason, trace_id = data.get("reason") or "", data.get("trace_id") or ""
    if not isinstance(reason, str) or not isinstance(trace_id, str):
        raise ValueError("reason and trace_id must be strings")
    return Ack(order_id, result == "accepted", reason[:500], trace_id[:64])


def apply_ack(db: sqlite3.Connection, ack: Ack, kit_id: str,
              at: Moment) -> dict[str, Any] | None:
    """Settle the order; returns its view when this ack changed it (a repeat changes nothing)."""
    row = db.execute("SELECT status FROM orders WHERE order_id = ?", (ack.order_id,)).fetchone()
    if row is None or row["status"] not in (*OPEN, "refund_due"):
        return None
    status = "reconciled" if ack.accepted else "rejected"
    db.execute("UPDATE orders SET status = ?, reconciled_at = ?, reconciled_ks = ?, "
               "ack_reason = ?, updated_at = ? WHERE order_id = ?",
               (status, at.iso, at.ks, ack.reason or None, at.iso, ack.order_id))
    if not ack.accepted:
        outbox.record_event(db, {"type": "order_rejected", "order_id": ack.order_id,
                                 "reason": ack.reason}, kit_id, at.iso)
    return order_view(db, ack.order_id)


def _lost_sales(db: sqlite3.Connection, now: float, resend_after: float) -> list[sqlite3.Row]:
    """Relayed sales that HQ will not answer without a new copy (``now`` in kit seconds).

    HQ answers one kit's sales in the order they were sent, so a sale with no answer while a
    later one was answered after it went out was lost on the way (a broker that died after its
    PUBACK). Without such evidence HQ may just be slow: a sale is sent again only after
    ``resend_after`` seconds, then twice that, and so on, so repeats never pile onto a backlog.
    """
    grace = min(resend_after, 2.0)
    waiting = db.execute("SELECT order_id, seq, relayed_ks, resends FROM orders "
                         "WHERE status = 'relayed' AND relayed_ks <= ? ORDER BY seq",
                         (now - grace,)).fetchall()
    if not waiting:
        return []
    answered = db.execute(
        "SELECT reconciled_ks, seq FROM orders WHERE reconciled_ks >= ? ORDER BY reconciled_ks",
        (min(row["relayed_ks"] for row in waiting),)).fetchall()
    # latest_seq_after[i]: the highest seq answered at or after answered[i]'s time.
    latest_seq_after = [0] * (len(answered) + 1)
    for i in range(len(answered) - 1, -1, -1):
        latest_seq_after[i] = max(answered[i]["seq"], latest_seq_after[i + 1])
    times = [row["reconciled_ks"] for row in answered]
    cutoffs: dict[int, float] = {}  # resends so far -> sent before this is overdue
    lost = []
    for row in waiting:
        overtaken = latest_seq_after[bisect.bisect_right(times, row["relayed_ks"])] > row["seq"]
        resends = min(row["resends"], MAX_RESEND_DOUBLINGS)
        if resends not in cutoffs:
            cutoffs[resends] = now - Backoff.nth(
                resend_after, resend_after * 2 ** MAX_RESEND_DOUBLINGS, resends + 1)
        if overtaken or row["relayed_ks"] <= cutoffs[resends]:
            lost.append(row)
    return lost


def sweep(db: sqlite3.Connection, kit_id: str, at: Moment, *, mismatch_after: float,
          refund_after: float, resend_after: float) -> list[dict[str, Any]]:
    """Raise mismatches, mark refunds due and queue resends; returns the events raised.

    Ages are kit seconds (``at.ks`` less the order's), never the wall clock's, which jumps.
    """
    now, ks = at.iso, at.ks
    events = []
    for row in db.execute("SELECT order_id FROM orders WHERE status IN ('queued', 'relayed') "
                          "AND created_ks <= ?", (ks - refund_after,)).fetchall():
        db.execute("UPDATE orders SET status = 'refund_due', refund_due_at = ?, updated_at = ? "
                   "WHERE order_id = ?", (now, now, row["order_id"]))
        events.append({"type": "refund_due", "order_id": row["order_id"]})
    for row in db.execute("SELECT order_id, created_at, clock_synced FROM orders "
                          "WHERE status IN ('queued', 'relayed') AND mismatch_at IS NULL "
                          "AND created_ks <= ?", (ks - mismatch_after,)).fetchall():
        db.execute("UPDATE orders SET mismatch_at = ? WHERE order_id = ?",
                   (now, row["order_id"]))
        events.append({"type": "mismatch", "order_id": row["order_id"],
                       "sold_at": row["created_at"], "clock_synced": bool(row["clock_synced"]),
                       "detail": "HQ has not settled this sale"})
    for event in events:
        outbox.record_event(db, event, kit_id, now)
    _send_again(db, [row["order_id"] for row in _lost_sales(db, ks, resend_after)], now)
    note_seen(db, at, every_ks=SEEN_EVERY_KS)
    return events


def resend_unanswered(db: sqlite3.Connection, at: Moment) -> int:
    """HQ came online (it came back, or this connection found it there): every relayed
    sale it has not answered is sent again now, not ``resend_after`` later. A broker that
    restarted without its persistence, or that had HQ's session expire, passed those sales to
    nobody; a copy HQ already has is answered again. Returns how many go again."""
    rows = db.execute("SELECT order_id FROM orders WHERE status = 'relayed' ORDER BY seq")
    order_ids = [row["order_id"] for row in rows]
    _send_again(db, order_ids, at.iso)
    return len(order_ids)


def _send_again(db: sqlite3.Connection, order_ids: list[str], now: str) -> None:
    """A new copy of each sale into the outbox; the sale is queued again until the broker has
    the copy."""
    for order_id in order_ids:
        # The sale's own message, found by the order's sale_msg_id (no index over every key).
        db.execute("INSERT INTO outbox (kind, key, payload, created_at) SELECT 'sale', key, "
                   "payload, ? FROM outbox WHERE id = (SELECT sale_msg_id FROM orders "
                   "WHERE order_id = ?)", (now, order_id))
        db.execute("UPDATE orders SET status = 'queued', resends = resends + 1 "
                   "WHERE order_id = ?", (order_id,))
