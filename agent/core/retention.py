"""What the store may forget, so that it stays bounded over a season: outbox messages that the
broker has and that nobody will send again, and print jobs that are done, once older than the
retention time.

Never an unrelayed message, never a sale whose order HQ has not settled (its message is what a
resend copies), never a print job still waiting or unsure; never a receipt link, an order, its
lines or a stock movement, so the receipt chain verifies as before. The newest row of each
table always stays, so an id is never given out twice (SQLite gives a new row the largest id
plus one, and ``msg_id`` on the wire is the outbox id).

Each table is pruned in two steps, by one rule (:class:`Forgettable`, an SQL condition over a
row): :func:`prunable` on the reader picks the oldest rows that may go, without holding the
writer; :func:`prune` deletes those of them that still may, in the writer's transaction, the
same condition checked again. Ages are the wall clock's labels (``relayed_at``,
``updated_at``): a clock set forward forgets settled rows early, which loses nothing anyone
still needs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

SETTLED = ("reconciled", "rejected", "voided", "refunded")
"""Order statuses whose sale nobody sends again: HQ answered it, or the sale was closed."""
FINISHED_JOBS = ("printed", "checked", "dropped")
BATCH = 500
"""Rows pruned per transaction: the writer is never held long, whatever the backlog."""

_SETTLED_SQL = ", ".join(f"'{status}'" for status in SETTLED)
_FINISHED_SQL = ", ".join(f"'{state}'" for state in FINISHED_JOBS)


@dataclass(frozen=True)
class Forgettable:
    """What of one table may go: ``may_go`` is an SQL condition over one of ``table``'s rows,
    true when it may, with one parameter, the cutoff (an ISO time)."""

    table: str
    may_go: str


MESSAGES = Forgettable("outbox", (
    "relayed_at IS NOT NULL AND relayed_at < ? AND (kind <> 'sale' OR EXISTS ("
    "SELECT 1 FROM orders d WHERE d.order_id = outbox.key "
    f"AND d.status IN ({_SETTLED_SQL})))"))
"""Outbox messages relayed before the cutoff and, for a sale, its order settled."""
JOBS = Forgettable("print_jobs", f"state IN ({_FINISHED_SQL}) AND updated_at < ?")
"""Print jobs printed, checked or dropped (a slip no longer true), last changed before the
cutoff."""


def prunable(db: sqlite3.Connection, rows: Forgettable, before: str,
             limit: int = BATCH) -> list[int]:
    """The oldest ids of ``rows.table`` that may go by ``before``, at most ``limit``. Reads in id
    order and stops at the first row made since ``before``, or at the newest row."""
    ids: list[int] = []
    newest = db.execute(f"SELECT max(id) FROM {rows.table}").fetchone()[0]
    for row_id, created_at, may_go in db.execute(
            f"SELECT id, created_at, {rows.may_go} FROM {rows.table} ORDER BY id", (before,)):
        if row_id == newest or created_at >= before:
            break
        if may_go:
            ids.append(row_id)
            if len(ids) >= limit:
                break
    return ids


def prune(db: sqlite3.Connection, rows: Forgettable, ids: Sequence[int], before: str) -> int:
    """Delete those of ``ids`` that still may go (checked again here, the newest row kept);
    returns how many."""
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return db.execute(
        f"DELETE FROM {rows.table} WHERE id IN ({marks}) "
        f"AND id < (SELECT max(id) FROM {rows.table}) AND {rows.may_go}",
        (*ids, before)).rowcount
