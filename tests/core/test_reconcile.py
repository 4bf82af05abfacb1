"""Reconciliation with HQ (agent/core/reconcile.py) on a real SQLite file, with real sales.

Every function here takes "now" as an ISO string, so the tests move the clock by hand: no sleeps.
The expected timings are worked out here from the rules as documented (mismatch after
``mismatch_after``, refund due after ``refund_after``, a lost sale re-sent after
``resend_after``, then twice that, and so on up to 1024 times), not read back from the code.
"""

from __future__ import annotations

import json
import sqlite3

import pytest

from agent.core.orders import void_order
from agent.core.reconcile import Ack, _lost_sales, apply_ack, parse_ack, resend_unanswered, sweep
from tests.core.sales_helpers import KIT, at, moment, relay, sell

FAR = 10**9  # seconds: a threshold that is never reached in the test


def order(db: sqlite3.Connection, order_id: str) -> sqlite3.Row:
    return db.execute("SELECT * FROM orders WHERE order_id = ?", (order_id,)).fetchone()


def events(db: sqlite3.Connection) -> list[dict]:
    return [json.loads(payload)["event"] for (payload,) in db.execute(
        "SELECT payload FROM outbox WHERE kind = 'event' ORDER BY id")]


def sale_messages(db: sqlite3.Connection, order_id: str) -> list[str]:
    return [payload for (payload,) in db.execute(
        "SELECT payload FROM outbox WHERE kind = 'sale' AND key = ? ORDER BY id", (order_id,))]


def everything(db: sqlite3.Connection) -> list[list[tuple]]:
    """Every row of the tables reconciliation may touch, to show that nothing changed."""
    return [[tuple(row) for row in db.execute(f"SELECT * FROM {table} ORDER BY rowid")]
            for table in ("orders", "outbox", "receipts", "items")]


def ack(order_id: str, accepted: bool = True, reason: str = "") -> Ack:
    return parse_ack(json.dumps({"order_id": order_id,
                                 "result": "accepted" if accepted else "rejected",
                                 "reason": reason, "trace_id": "hq-trace"}).encode())


def run_sweep(db: sqlite3.Connection, when: float, *, mismatch_after: float = FAR,
              refund_after: float = FAR, resend_after: float = FAR) -> list[dict]:
    return sweep(db, KIT, moment(when), mismatch_after=mismatch_after, refund_after=refund_after,
                 resend_after=resend_after)


# -- parse_ack ---------------------------------------------------------------------------------

def test_parse_ack_reads_a_well_formed_answer() -> None:
    parsed = parse_ack(b'{"order_id": "order-0001", "result": "rejected", '
                       b'"reason": "central stock has 0 left", "trace_id": "t-1"}')
    assert parsed == Ack("order-0001", False, "central stock has 0 left", "t-1")
    # reason and trace_id are optional, and null is as good as absent.
    assert parse_ack(b'{"order_id": "o", "result": "accepted", "reason": null}') == \
        Ack("o", True, "", "")


@pytest.mark.parametrize("payload", [
    b"", b"not json", b"\xff\xfe", b"[1, 2]", b'"order-0001"', b"null", b"42",
    b"[" * 100_000 + b"]" * 100_000,  # nested past the parser's recursion limit
    b'{"order_id": "order-0001"',  # cut short
], ids=["empty", "text", "bad-utf8", "array", "string", "null", "number", "deep", "truncated"])
def test_parse_ack_refuses_garbage(payload: bytes) -> None:
    with pytest.raises(ValueError):
        parse_ack(payload)


@pytest.mark.parametrize("fields", [
    {"result": "accepted"},
    {"order_id": None, "result": "accepted"},
    {"order_id": 17, "result": "accepted"},
    {"order_id": ["order-0001"], "result": "accepted"},
    {"order_id": "", "result": "accepted"},
    {"order_id": "x" * 65, "result": "accepted"},
    {"order_id": "order-0001"},
    {"order_id": "order-0001", "result": "ACCEPTED"},
    {"order_id": "order-0001", "result": True},
    {"order_id": "order-0001", "result": ["accepted"]},
    {"order_id": "order-0001", "result": "accepted", "reason": 5},
    {"order_id": "order-0001", "result": "accepted", "reason": {"why": "no"}},
    {"order_id": "order-0001", "result": "accepted", "trace_id": 12},
    {"order_id": "order-0001", "result": "accepted", "trace_id": ["t"]},
])
def test_parse_ack_refuses_wrong_types_and_values(fields: dict) -> None:
    with pytest.raises(ValueError):
        parse_ack(json.dumps(fields).encode())


def test_parse_ack_bounds_long_strings() -> None:
    assert parse_ack(json.dumps({"order_id": "x" * 64, "result": "accepted"}).encode()
                     ).order_id == "x" * 64
    parsed = parse_ack(json.dumps({"order_id": "order-0001", "result": "rejected",
                                   "reason": "r" * 100_000, "trace_id": "t" * 10_000}).encode())
    assert parsed.reason == "r" * 500 and parsed.trace_id == "t" * 64


# -- apply_ack ---------------------------------------------------------------------------------

def test_an_accepted_ack_reconciles_the_sale(db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0)
    relay(db, "order-0001", 1)
    view = apply_ack(db, ack("order-0001"), KIT, moment(2))
    assert view is not None and view["status"] == "reconciled"
    row = order(db, "order-0001")
    assert (row["status"], row["reconciled_at"], row["ack_reason"]) == \
        ("reconciled", at(2), None)
    assert events(db) == []


def test_a_rejected_ack_marks_the_sale_and_raises_an_event(db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0)
    view = apply_ack(db, ack("order-0001", False, "central stock has 0 left"), KIT, moment(2))
    assert view is not None and view["status"] == "rejected"
    row = order(db, "order-0001")
    assert (row["status"], row["ack_reason"]) == ("rejected", "central stock has 0 left")
    assert events(db) == [{"type": "order_rejected", "order_id": "order-0001",
                           "reason": "central stock has 0 left"}]


@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "rejected"])
def test_a_repeated_ack_changes_nothing(db: sqlite3.Connection, accepted: bool) -> None:
    sell(db, "order-0001", 0)
    assert apply_ack(db, ack("order-0001", accepted, "first"), KIT, moment(2)) is not None
    before = everything(db)
    # The same answer again, or HQ changing its mind: the first answer stands.
    assert apply_ack(db, ack("order-0001", accepted, "first"), KIT, moment(3)) is None
    assert apply_ack(db, ack("order-0001", not accepted, "second"), KIT, moment(4)) is None
    assert everything(db) == before


def test_an_ack_for_an_unknown_or_closed_order_changes_nothing(db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0, method="card")
    void_order(db, "order-0001", "card declined", KIT, at(1))
    before = everything(db)
    assert apply_ack(db, ack("no-such-order"), KIT, moment(2)) is None
    assert apply_ack(db, ack("order-0001"), KIT, moment(2)) is None
    assert everything(db) == before


def test_an_ack_still_settles_a_sale_marked_refund_due(db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0)
    run_sweep(db, 100, refund_after=100)
    assert order(db, "order-0001")["status"] == "refund_due"
    view = apply_ack(db, ack("order-0001"), KIT, moment(101))
    assert view is not None and view["status"] == "reconciled"


# -- sweep: mismatch and refund_due ------------------------------------------------------------

def test_an_unsettled_sale_raises_one_mismatch_after_mismatch_after(
        db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0)
    sell(db, "order-0002", 0)
    apply_ack(db, ack("order-0002"), KIT, moment(1))  # settled in time: never a mismatch
    assert run_sweep(db, 29.999, mismatch_after=30) == []
    raised = run_sweep(db, 30, mismatch_after=30)
    assert raised == [{"type": "mismatch", "order_id": "order-0001", "sold_at": at(0),
                       "clock_synced": True, "detail": "HQ has not settled this sale"}]
    assert order(db, "order-0001")["mismatch_at"] == at(30)
    # Once: later sweeps raise nothing more for it, and the sale stays open.
    assert run_sweep(db, 31, mismatch_after=30) == []
    assert run_sweep(db, 3000, mismatch_after=30) == []
    assert events(db) == raised
    assert order(db, "order-0001")["status"] == "queued"


def test_a_sale_never_settled_becomes_refund_due_after_refund_after(
        db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0)
    relay(db, "order-0001", 1)
    assert [e["type"] for e in run_sweep(db, 60, mismatch_after=60, refund_after=600)] == \
        ["mismatch"]
    assert run_sweep(db, 599.999, mismatch_after=60, refund_after=600) == []
    assert run_sweep(db, 600, mismatch_after=60, refund_after=600) == [
        {"type": "refund_due", "order_id": "order-0001"}]
    row = order(db, "order-0001")
    assert (row["status"], row["refund_due_at"]) == ("refund_due", at(600))
    assert run_sweep(db, 6000, mismatch_after=60, refund_after=600) == []
    assert [e["type"] for e in events(db)] == ["mismatch", "refund_due"]


# -- sweep: resending relayed sales HQ never answered ------------------------------------------

def test_a_relayed_sale_with_no_ack_is_resent_with_the_wait_doubling_up_to_its_cap(
        db: sqlite3.Connection) -> None:
    resend_after = 10.0
    sell(db, "order-0001", 0)
    [first_copy] = sale_messages(db, "order-0001")
    relayed_at = 0.0
    relay(db, "order-0001", relayed_at)
    for resends in range(13):
        # The wait before resend number resends+1: doubling each time, at most 1024 times the
        # first (10 doublings).
        wait = resend_after * 2 ** min(resends, 10)
        run_sweep(db, relayed_at + wait - 0.001, resend_after=resend_after)
        assert len(sale_messages(db, "order-0001")) == resends + 1, \
            f"resend {resends + 1} came before {wait} s"
        assert order(db, "order-0001")["status"] == "relayed"
        run_sweep(db, relayed_at + wait, resend_after=resend_after)
        row = order(db, "order-0001")
        assert (row["status"], row["resends"]) == ("queued", resends + 1)
        copies = sale_messages(db, "order-0001")
        assert copies == [first_copy] * (resends + 2), "the copy must be the same message"
        # A queued copy is not sent again while it waits for the broker.
        run_sweep(db, relayed_at + 10 * wait, resend_after=resend_after)
        assert len(sale_messages(db, "order-0001")) == resends + 2
        relayed_at += wait + 1
        relay(db, "order-0001", relayed_at)
    assert wait == resend_after * 1024
    assert events(db) == []


def test_a_settled_sale_is_never_resent(db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0)
    relay(db, "order-0001", 0)
    apply_ack(db, ack("order-0001"), KIT, moment(5))
    run_sweep(db, 10_000, resend_after=10)
    assert len(sale_messages(db, "order-0001")) == 1
    assert order(db, "order-0001")["status"] == "reconciled"


def test_hq_online_sends_every_unanswered_relayed_sale_again_at_once(
        db: sqlite3.Connection) -> None:
    for n in (1, 2, 3, 4):
        sell(db, f"order-000{n}", 0)
    for n in (1, 2, 3):
        relay(db, f"order-000{n}", 1)
    apply_ack(db, ack("order-0002"), KIT, moment(2))
    # One second after they went: far from resend_after, but HQ just said it is online.
    assert resend_unanswered(db, moment(2)) == 2
    assert [len(sale_messages(db, f"order-000{n}")) for n in (1, 2, 3, 4)] == [2, 1, 2, 1]
    assert [order(db, f"order-000{n}")["status"] for n in (1, 2, 3, 4)] == \
        ["queued", "reconciled", "queued", "queued"]
    assert order(db, "order-0001")["resends"] == 1
    # Queued copies wait for the broker: HQ saying it again sends nothing more.
    assert resend_unanswered(db, moment(3)) == 0
    assert events(db) == []


# -- _lost_sales: evidence that HQ will never answer -------------------------------------------

@pytest.mark.parametrize("accepted", [True, False], ids=["accepted", "rejected"])
def test_a_sale_overtaken_by_a_later_answered_sale_is_lost_and_resent(
        db: sqlite3.Connection, accepted: bool) -> None:
    for n in (1, 2, 3):
        sell(db, f"order-000{n}", 0)
        relay(db, f"order-000{n}", 0)
    # HQ answers in the order sales were sent: an answer for #2 with none for #1 means #1 was
    # lost on the way. #3 came after #2, so HQ may simply not have got to it yet.
    apply_ack(db, ack("order-0002", accepted), KIT, moment(3))
    assert [row["order_id"] for row in _lost_sales(db, 3, resend_after=600)] == \
        ["order-0001"]
    run_sweep(db, 3, resend_after=600)
    assert [len(sale_messages(db, f"order-000{n}")) for n in (1, 2, 3)] == [2, 1, 1]
    assert [order(db, f"order-000{n}")["status"] for n in (1, 3)] == ["queued", "relayed"]


def test_a_sale_sent_after_the_later_sale_was_answered_is_not_overtaken(
        db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0)
    sell(db, "order-0002", 0)
    relay(db, "order-0002", 0)
    apply_ack(db, ack("order-0002"), KIT, moment(1))
    # #1 went out after HQ answered #2: no evidence it was lost, so only the timer resends it.
    relay(db, "order-0001", 2)
    assert _lost_sales(db, 10, resend_after=600) == []
    run_sweep(db, 10, resend_after=600)
    assert len(sale_messages(db, "order-0001")) == 1
    assert [row["order_id"] for row in _lost_sales(db, 602, resend_after=600)] == \
        ["order-0001"]


def test_an_overtaken_sale_gets_a_grace_before_it_counts_as_lost(
        db: sqlite3.Connection) -> None:
    sell(db, "order-0001", 0)
    sell(db, "order-0002", 0)
    relay(db, "order-0001", 0)
    relay(db, "order-0002", 0)
    apply_ack(db, ack("order-0002"), KIT, moment(0.5))
    # HQ's answer for #1 may be a moment behind the one for #2: 2 s of grace (or resend_after
    # when shorter).
    assert _lost_sales(db, 1.999, resend_after=600) == []
    assert [row["order_id"] for row in _lost_sales(db, 2, resend_after=600)] == \
        ["order-0001"]
    assert _lost_sales(db, 0.999, resend_after=1) == []
    assert [row["order_id"] for row in _lost_sales(db, 1, resend_after=1)] == \
        ["order-0001"]
