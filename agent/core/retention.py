"""What the store may forget, so that it stays bounded over a season: outbox messages that the
broker has and that nobody will send again, and print jobs that are done, once older than the
retention time.

Never an unrelayed message, never a sale whose order HQ has not settled (its message is what a
resend copies), never a print job still waiting or unsure; never a receipt link, an order, its
lines or a stock movement, so the receipt chain verifies as before. The newest row of each
table always stays, so an id is never given out twice (SQLite gives a new row the largest id
plus one, and ``msg_id`` on the wire is the outbox id).

Each table is pruned in two steps: :func:`prunable_messages` (or ``_jobs``) on the reader picks
the oldest rows that may go, without holding the writer; :func:`prune_messages` (or ``_jobs``)
deletes those of them that still may, in the writer's transaction. Ages are the wall clock's
labels (``relayed_at``, ``updated_at``): a clock set forward forgets settled rows early, which
loses nothing anyone still needs.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

SETTLED = ("reconciled", "rejected", "voided", "refunded")
"""Order statuses whose sale nobody sends again: HQ answered it, or the sale was closed."""
FINISHED_JOBS = ("printed", "checked", "dropped")
BATCH = 500
"""Rows pruned per transaction: the writer is never held long, whatever the backlog."""

_SETTLED_SQL = ", ".join(f"'{status}'" for status in SETTLED)
_FINISHED_SQL = ", ".join(f"'{state}'" for state in FINISHED_JOBS)


def prunable_messages(db: sqlite3.Connection, before: str, limit: int = BATCH) -> list[int]:
    """The oldest outbox ids that may go: relayed before ``before`` and, for a sale, its order
    settled. Reads in id order and stops at the first message made since ``before``."""
    ids: list[int] = []
    newest = db.execute("SELECT max(id) FROM outbox").fetchone()[0]
    for row in db.execute("SELECT o.id, o.kind, o.created_at, o.relayed_at, d.status "
                          "FROM outbox o LEFT JOIN orders d "
                          "ON o.kind = 'sale' AND d.order_id = o.key ORDER BY o.id"):
        if row[0] == newest or row[2] >= before:
            break
        if row[3] is not None and row[3] < before and (row[1] != "sale" or row[4] in SETTLED):
            ids.append(row[0])
            if len(ids) >= limit:
                break
    return ids


def prune_messages(db: sqlite3.Connection, ids: Sequence[int], before: str) -> int:
    """Delete those of ``ids`` that still may go (checked again here); returns how many."""
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return db.execute(
        f"DELETE FROM outbox WHERE id IN ({marks}) AND id < (SELECT max(id) FROM outbox) "
        f"AND relayed_at IS NOT NULL AND relayed_at < ? AND (kind <> 'sale' OR EXISTS ("
        f"SELECT 1 FROM orders d WHERE d.order_id = outbox.key AND d.status IN ({_SETTLED_SQL})))",
        (*ids, before)).rowcount


def prunable_jobs(db: sqlite3.Connection, before: str, limit: int = BATCH) -> list[int]:
    """The oldest print jobs that may go: printed, checked or dropped (a slip no longer true),
    last changed before ``before``."""
    ids: list[int] = []
    newest = db.execute("SELECT max(id) FROM print_jobs").fetchone()[0]
    for row in db.execute("SELECT id, state, created_at, updated_at FROM print_jobs "
                          "ORDER BY id"):
        if row[0] == newest or row[2] >= before:
            break
        if row[1] in FINISHED_JOBS and row[3] < before:
            ids.append(row[0])
            if len(ids) >= limit:
                break
    return ids


def prune_jobs(db: sqlite3.Connection, ids: Sequence[int], before: str) -> int:
    """Delete those of ``ids`` that still may go (checked again here); returns how many."""
    if not ids:
        return 0
    marks = ",".join("?" * len(ids))
    return db.execute(
        f"DELETE FROM print_jobs WHERE id IN ({marks}) AND id < (SELECT max(id) FROM "
        f"print_jobs) AND state IN ({_FINISHED_SQL}) AND updated_at < ?",
        (*ids, before)).rowcount
