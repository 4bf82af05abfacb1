"""Print jobs in the store: each sale's receipt queued in the sale's own transaction.

A job goes ``pending`` -> ``sending`` (committed before a byte is sent) -> ``printed``, or
``unsure`` when nobody knows whether the paper came out; staff settle an ``unsure`` job with a
reprint or a check. :class:`agent.fieldio.printing.PrintQueue` moves the jobs; these functions
are the rules, each run inside the caller's transaction.
"""

from __future__ import annotations

import sqlite3
from typing import Any, cast

from agent.core.errors import Refusal
from agent.core.views import order_view

_WAITING = ("pending", "sending")
NOT_DONE = "state IN ('pending', 'sending', 'unsure')"
"""The condition of the ``print_jobs_waiting`` index (the jobs not done): a query names it to
use that index, which holds only these few (a printed job leaves it, and writes no page there)."""


# -- in the caller's transaction ---------------------------------------------------------------

def enqueue_receipt(db: sqlite3.Connection, order_id: str, now: str) -> int:
    """Queue a new sale's receipt; call it inside the sale's transaction. Returns the job id.

    An order has one receipt job: for an order that has it already (a retried request), its
    id is returned and nothing is added.
    """
    queued = db.execute("SELECT id FROM print_jobs WHERE order_id = ? AND kind = 'receipt'",
                        (order_id,)).fetchone()
    return queued["id"] if queued is not None else _insert_job(db, order_id, "receipt", now)


def enqueue_reprint(db: sqlite3.Connection, order_id: str, now: str) -> int:
    """Queue another copy of an order's receipt (printed marked COPY); returns the job id.

    A job for the order still waiting to print is answered instead of adding one (a second
    tap while the paper is out prints one receipt, not two). The order's ``unsure`` jobs are
    settled: asking for a copy is staff's answer to them. Raises a ``not_found`` :class:`Refusal`.
    """
    if db.execute("SELECT 1 FROM orders WHERE order_id = ?", (order_id,)).fetchone() is None:
        raise Refusal("not_found", f"no order {order_id}", order_id=order_id)
    waiting = db.execute("SELECT id FROM print_jobs WHERE state IN (?, ?) AND order_id = ? "
                         "ORDER BY id LIMIT 1", (*_WAITING, order_id)).fetchone()
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
    """The oldest pending job and its order's view, read together."""
    row = db.execute(f"SELECT * FROM print_jobs WHERE state = 'pending' AND {NOT_DONE} "
                     f"ORDER BY id LIMIT 1").fetchone()
    if row is None:
        return None
    return _job_view(row), cast(dict[str, Any], order_view(db, row["order_id"]))


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
