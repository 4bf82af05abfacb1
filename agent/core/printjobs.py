"""Print jobs in the store: the paper each order's state calls for, queued in the transaction
that changed the order.

What prints, and when (:func:`queue_due`):

- ``receipt``: once the order is paid (a cash sale at once, a card sale when staff confirm the
  payment), never before;
- ``unpaid``: a NOT PAID slip when a card sale is made (payment ``pending``), only with
  ``[receipt] unpaid_slip``; dropped unprinted once the order is paid or voided;
- ``void``, ``refund``: a slip when the order is voided or refunded;
- ``reprint``: staff's copy, marked COPY, saying what the order is now.

Every job prints the order as it stands when it prints. A job goes ``pending`` -> ``sending``
(committed before a byte is sent) -> ``printed``, or ``unsure`` when nobody knows whether the
paper came out; staff settle an ``unsure`` job with a reprint or a check.
:class:`agent.fieldio.printing.PrintQueue` moves the jobs; these functions are the rules, each
run inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any, cast

from agent.core import receipts
from agent.core.errors import Refusal
from agent.core.views import order_view

_WAITING = ("pending", "sending")
_COPIES = ("receipt", "reprint")  # the jobs that print the order's receipt
NOT_DONE = "state IN ('pending', 'sending', 'unsure')"
"""The condition of the ``print_jobs_waiting`` index (the jobs not done): a query names it to
use that index, which holds only these few (a printed job leaves it, and writes no page there)."""


# -- in the caller's transaction ---------------------------------------------------------------

def queue_due(db: sqlite3.Connection, order_id: str, now: str, *,
              unpaid_slip: bool = False) -> list[int]:
    """Queue the paper the order's state calls for and that it has not had; call it in the
    transaction that changed the order. Returns the new jobs' ids.

    An order has at most one job of each kind, so a retried request adds nothing. A NOT PAID
    slip still waiting when the order is paid or voided is dropped: it is no longer true.
    """
    order = db.execute("SELECT status, payment_status FROM orders WHERE order_id = ?",
                       (order_id,)).fetchone()
    if order is None:
        raise Refusal("not_found", f"no order {order_id}", order_id=order_id)
    if order["status"] in ("voided", "refunded"):
        due = "void" if order["status"] == "voided" else "refund"
    elif order["payment_status"] == "paid":
        due = "receipt"
    elif order["payment_status"] == "pending":  # a card payment waiting for the terminal
        due = "unpaid"
    else:  # failed, or not paid yet: nothing to print until it is paid or voided
        return []
    if due != "unpaid":
        outcome = {"void": "voided", "refund": "refunded"}.get(due, "paid")
        db.execute("UPDATE print_jobs SET state = 'dropped', updated_at = ?, note = ? "
                   "WHERE order_id = ? AND kind = 'unpaid' AND state = 'pending'",
                   (now, f"not printed: the order was {outcome} before it could be", order_id))
    elif not unpaid_slip:
        return []
    queued = db.execute("SELECT 1 FROM print_jobs WHERE order_id = ? AND kind = ?",
                        (order_id, due)).fetchone()
    return [] if queued is not None else [_insert_job(db, order_id, due, now)]


def enqueue_reprint(db: sqlite3.Connection, order_id: str, now: str) -> int:
    """Queue another copy of an order's receipt (printed marked COPY); returns the job id.

    The order's receipt or copy still waiting to print is answered instead of adding one (a
    second tap while the paper is out prints one receipt, not two). The order's ``unsure`` jobs are
    settled: asking for a copy is staff's answer to them. Raises a ``not_found`` :class:`Refusal`.
    """
    if db.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)).fetchone() is None:
        raise Refusal("not_found", f"no order {order_id}", order_id=order_id)
    waiting = db.execute("SELECT id FROM print_jobs WHERE state IN (?, ?) AND order_id = ? "
                         "AND kind IN (?, ?) ORDER BY id LIMIT 1",
                         (*_WAITING, order_id, *_COPIES)).fetchone()
    if waiting is not None:
        return waiting["id"]
    db.execute("UPDATE print_jobs SET state = 'checked', updated_at = ?, note = 'reprinted' "
               "WHERE state = 'unsure' AND order_id = ?", (now, order_id))
    return _insert_job(db, order_id, "reprint", now)


def enqueue_reprint_last(db: sqlite3.Connection, now: str) -> int | None:
    """Reprint the last sale's receipt (the panel's reprint button); None with no sale yet."""
    last = db.execute("SELECT order_id FROM orders ORDER BY seq DESC LIMIT 1").fetchone()
    return None if last is None else enqueue_reprint(db, last["order_id"], now)


def mark_checked(db: sqlite3.Connection, job_id: int, now: str) -> bool:
    """Staff looked at an ``unsure`` job and need no copy; False when it is not unsure."""
    return db.execute("UPDATE print_jobs SET state = 'checked', updated_at = ?, "
                      "note = 'checked by staff' WHERE id = ? AND state = 'unsure'",
                      (now, job_id)).rowcount == 1


# -- reading -----------------------------------------------------------------------------------

def job_counts(db: sqlite3.Connection) -> dict[str, int]:
    """``waiting`` (not printed yet) and ``unsure`` (may need a reprint) jobs, for health."""
    counts = {row[0]: row[1] for row in db.execute(
        f"SELECT state, count(*) FROM print_jobs WHERE {NOT_DONE} GROUP BY state")}
    return {"waiting": counts.get("pending", 0) + counts.get("sending", 0),
            "unsure": counts.get("unsure", 0)}


def jobs_to_check(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """The ``unsure`` jobs, oldest first: receipts that may not have printed."""
    return [_job_view(row) for row in db.execute(
        f"SELECT * FROM print_jobs WHERE state = 'unsure' AND {NOT_DONE} ORDER BY id")]


def _job_view(row: sqlite3.Row) -> dict[str, Any]:
    return {key: row[key] for key in
            ("id", "order_id", "kind", "state", "created_at", "updated_at", "note")}


def _insert_job(db: sqlite3.Connection, order_id: str, kind: str, now: str) -> int:
    cursor = db.execute("INSERT INTO print_jobs (order_id, kind, created_at, updated_at) "
                        "VALUES (?, ?, ?, ?)", (order_id, kind, now, now))
    return cast(int, cursor.lastrowid)


def next_job(db: sqlite3.Connection) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The oldest pending job and its order's view, read together; the view has ``closed``,
    the order's void or refund link (``kind``, ``seq``, ``hash``, ``created_at``, ``reason``,
    ``restock``) or None."""
    row = db.execute(f"SELECT * FROM print_jobs WHERE state = 'pending' AND {NOT_DONE} "
                     f"ORDER BY id LIMIT 1").fetchone()
    if row is None:
        return None
    order = cast(dict[str, Any], order_view(db, row["order_id"]))
    closed = receipts.closing_link(db, row["order_id"], order["receipt"]["seq"])
    return _job_view(row), {**order, "closed": closed}


def move_job(db: sqlite3.Connection, job_id: int, before: str, after: str, now: str,
              note: str = "") -> dict[str, Any] | None:
    """Move a job from state ``before`` to ``after``; None when it was not in ``before``."""
    row = db.execute("UPDATE print_jobs SET state = ?, updated_at = ?, note = ? "
                     "WHERE id = ? AND state = ? RETURNING *",
                     (after, now, note, job_id, before)).fetchone()
    return None if row is None else _job_view(row)


def flag_interrupted_sends(db: sqlite3.Connection, now: str) -> list[dict[str, Any]]:
    return [_job_view(row) for row in db.execute(
        f"UPDATE print_jobs SET state = 'unsure', updated_at = ?, note = ? "
        f"WHERE state = 'sending' AND {NOT_DONE} RETURNING *",
        (now, "the kit stopped while sending this receipt; check whether it printed"))]
