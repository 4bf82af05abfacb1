"""Retention (agent/core/retention.py) on a real SQLite file, with real sales in every state.

What may go is worked out here from the documented rule: a message relayed before the cutoff
whose sale (if it is one) HQ settled or staff closed; a print job printed, checked or dropped
before the cutoff; never the newest row of either table.
"""

from __future__ import annotations

import json
import sqlite3

from agent.core import outbox, printjobs, receipts, retention
from agent.core.orders import refund_order, sale_matches_order, void_order
from agent.core.reconcile import Ack, apply_ack, sweep
from tests.core.sales_helpers import KIT, at, moment, relay, sell

FAR = 10**9


def prune_all(db: sqlite3.Connection, before: str) -> tuple[int, int]:
    """Prune as the retention part does, in batches, until nothing more may go."""
    gone = [0, 0]
    for n, rows in enumerate((retention.MESSAGES, retention.JOBS)):
        while ids := retention.prunable(db, rows, before, 2):  # batches of 2: several rounds
            pruned = retention.prune(db, rows, ids, before)
            assert pruned, f"picked {ids}, which may not go"
            gone[n] += pruned
    return gone[0], gone[1]


def message_ids(db: sqlite3.Connection) -> set[int]:
    return {row[0] for row in db.execute("SELECT id FROM outbox")}


def last_message(db: sqlite3.Connection) -> int:
    return db.execute("SELECT max(id) FROM outbox").fetchone()[0]


def relay_message(db: sqlite3.Connection, message: int, when: float) -> None:
    outbox.mark_relayed(db, [message], moment(when))


def job(db: sqlite3.Connection, order_id: str, *moves: str) -> int:
    """The paper the order's state calls for, queued and moved through ``moves``."""
    [job_id] = printjobs.queue_due(db, order_id, at(290))
    state = "pending"
    for after in moves:
        if after == "checked":
            assert printjobs.mark_checked(db, job_id, at(300))
        else:
            assert printjobs.move_job(db, job_id, state, after, at(300)) is not None
        state = after
    return job_id


def test_only_relayed_and_settled_messages_and_finished_jobs_go(db: sqlite3.Connection) -> None:
    kept: set[int] = set()
    # E: relayed, then unsettled so long that the refund is due (HQ may still answer it).
    sell(db, "order-E", 0)
    relay(db, "order-E", 0)
    sweep(db, KIT, moment(100), mismatch_after=FAR, refund_after=50, resend_after=FAR)
    kept |= message_ids(db)  # E's sale and its refund_due event (not relayed)
    sell(db, "order-A", 200)  # never relayed
    kept.add(last_message(db))
    sell(db, "order-B", 200)  # relayed, HQ has not answered
    relay(db, "order-B", 210)
    kept.add(last_message(db))
    [b_copy] = [row[0] for row in db.execute(
        "SELECT payload FROM outbox WHERE kind = 'sale' AND key = 'order-B'")]
    sell(db, "order-C", 200)
    relay(db, "order-C", 210)
    apply_ack(db, Ack("order-C", True, "", "t"), KIT, moment(220))
    sell(db, "order-D", 200)
    relay(db, "order-D", 210)
    apply_ack(db, Ack("order-D", False, "no stock at HQ", "t"), KIT, moment(220))
    kept.add(last_message(db))  # the order_rejected event, not relayed
    sell(db, "order-F", 200, method="card")  # voided while HQ had not answered
    [unpaid_slip] = printjobs.queue_due(db, "order-F", at(200), unpaid_slip=True)
    relay(db, "order-F", 210)
    void_order(db, "order-F", "card declined", KIT, at(230))
    relay_message(db, last_message(db), 240)
    sell(db, "order-G", 200)
    relay(db, "order-G", 210)
    apply_ack(db, Ack("order-G", True, "", "t"), KIT, moment(220))
    refund_order(db, "order-G", True, "returned", KIT, at(230))
    relay_message(db, last_message(db), 240)
    outbox.record_event(db, {"type": "mode", "state": "online", "reasons": []}, KIT, at(250))
    relay_message(db, last_message(db), 260)
    outbox.record_event(db, {"type": "mode", "state": "offline", "reasons": []}, KIT, at(250))
    kept.add(last_message(db))  # not relayed
    outbox.record_event(db, {"type": "mode", "state": "online", "reasons": []}, KIT, at(270))
    relay_message(db, last_message(db), 280)
    kept.add(last_message(db))  # relayed and may go, but the newest row always stays
    newest_message = last_message(db)

    jobs_kept = {job(db, "order-A"), job(db, "order-B", "sending"),
                 job(db, "order-D", "sending", "unsure")}
    job(db, "order-C", "sending", "printed")
    job(db, "order-E", "sending", "unsure", "checked")
    job(db, "order-F", "sending", "printed")  # its VOID slip; its NOT PAID slip is dropped
    assert db.execute("SELECT state FROM print_jobs WHERE id = ?",
                      (unpaid_slip,)).fetchone()[0] == "dropped"
    jobs_kept.add(job(db, "order-G", "sending", "printed"))  # the newest job
    messages_before, jobs_before = len(message_ids(db)), 8

    # A cutoff before the settled sales were relayed (and the jobs done) keeps them all.
    assert prune_all(db, at(205)) == (0, 0)

    gone = prune_all(db, at(FAR))
    assert message_ids(db) == kept
    assert {row[0] for row in db.execute("SELECT id FROM print_jobs")} == jobs_kept
    assert gone == (messages_before - len(kept), jobs_before - len(jobs_kept))
    assert prune_all(db, at(FAR)) == (0, 0)

    # Asked directly for the rows that stay, the writer's check still refuses them.
    assert retention.prune(db, retention.MESSAGES, sorted(kept), at(FAR)) == 0
    assert retention.prune(db, retention.JOBS, sorted(jobs_kept), at(FAR)) == 0

    # The chain, the orders and their lines are all there: the chain verifies.
    report = receipts.verify(db, sale_matches_order)
    assert report.ok and report.links == 9, report

    # The relayed sale HQ never answered can still be resent: the same message again.
    sweep(db, KIT, moment(10_000), mismatch_after=FAR, refund_after=FAR, resend_after=10)
    copies = [row[0] for row in db.execute(
        "SELECT payload FROM outbox WHERE kind = 'sale' AND key = 'order-B' ORDER BY id")]
    assert copies == [b_copy, b_copy]
    # No id is given out twice: the next message's id is past every one before.
    assert last_message(db) > newest_message
    assert json.loads(copies[1])["order_id"] == "order-B"
