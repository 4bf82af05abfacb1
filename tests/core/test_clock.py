"""The clock at a market: the wall clock set back a day and forward a day while sales wait for
HQ, on a real SQLite file with the real sales and reconciliation rules.

The kit's clocks are driven through their seam (:class:`agent.core.clock.Clock`): the test owns
the wall clock, the boot's monotonic clock and the boot id. The expected firing times are the
documented thresholds counted on the monotonic clock the test advances by hand.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from agent import store
from agent.core import clock, outbox
from agent.core.reconcile import sweep
from tests.core.sales_helpers import KIT, T0, open_db
from tests.core.test_reconcile import order

DAY = 86_400.0
MISMATCH, REFUND, RESEND = 1800.0, 3600.0, 60.0


class Hands:
    """The clocks as the test sets them."""

    def __init__(self, boot_id: str = "boot-1", synced: bool = True) -> None:
        self.wall, self.mono, self.synced = T0.timestamp(), 0.0, synced
        self.boot_id = boot_id

    def clock(self) -> clock.Clock:
        return clock.Clock(wall=lambda: self.wall, mono=lambda: self.mono,
                           boot_id=self.boot_id, synced=lambda: self.synced)

    def tick(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self.wall += seconds
        self.mono += seconds


def resumed(db: sqlite3.Connection, hands: Hands) -> clock.Timeline:
    db.execute("BEGIN")
    timeline = clock.resume(db, hands.clock())
    db.execute("COMMIT")
    return timeline


def relay(db: sqlite3.Connection, order_id: str, timeline: clock.Timeline) -> None:
    """What the uplink does after the broker's PUBACK for the sale's pending message."""
    ids = [r[0] for r in db.execute("SELECT id FROM outbox WHERE kind = 'sale' AND key = ? "
                                    "AND relayed_at IS NULL", (order_id,))]
    outbox.mark_relayed(db, ids, timeline.now())


def sell(db: sqlite3.Connection, order_id: str, timeline: clock.Timeline) -> None:
    from agent.core.orders import OrderRequest, place_order

    place_order(db, OrderRequest(order_id, (("ZINE-07", 1),), "cash"), KIT, "t",
                timeline.now())


def run(db: sqlite3.Connection, timeline: clock.Timeline) -> list[tuple[str, str]]:
    events = sweep(db, KIT, timeline.now(), mismatch_after=MISMATCH, refund_after=REFUND,
                   resend_after=RESEND)
    return sorted((e["type"], e["order_id"]) for e in events)


def sale_copies(db: sqlite3.Connection, order_id: str) -> int:
    return db.execute("SELECT count(*) FROM outbox WHERE kind = 'sale' AND key = ?",
                      (order_id,)).fetchone()[0]


def test_wall_clock_set_back_and_forward_a_day_moves_no_timer(tmp_path: Path) -> None:
    db = open_db(tmp_path / "kit.db")
    hands = Hands(synced=False)  # booted with the time it last saved
    timeline = resumed(db, hands)
    sell(db, "order-early", timeline)  # at monotonic 0
    hands.tick(10)
    relay(db, "order-early", timeline)  # at monotonic 10

    # NTP sets the clock back a day: the waiting sale is not forgotten.
    hands.wall -= DAY
    hands.synced = True
    hands.tick(RESEND - 0.5)  # monotonic 69.5: not yet a resend
    assert run(db, timeline) == [] and sale_copies(db, "order-early") == 1
    hands.tick(0.5)  # 60 s after it was relayed: sent again
    assert run(db, timeline) == [] and sale_copies(db, "order-early") == 2
    hands.mono = MISMATCH - 0.001
    hands.wall = T0.timestamp() - DAY + hands.mono
    assert run(db, timeline) == []
    hands.mono = MISMATCH
    assert run(db, timeline) == [("mismatch", "order-early")]

    # A second sale, then the clock jumps forward a day: nothing fires early.
    hands.tick(100)
    sell(db, "order-late", timeline)  # at monotonic 1900
    late_sold = hands.mono
    hands.wall += 2 * DAY
    hands.tick(1)
    assert run(db, timeline) == []
    assert order(db, "order-late")["status"] == "queued"
    hands.mono = REFUND - 0.001
    assert run(db, timeline) == []
    hands.mono = REFUND
    assert run(db, timeline) == [("refund_due", "order-early")]
    hands.mono = late_sold + MISMATCH
    assert run(db, timeline) == [("mismatch", "order-late")]
    hands.mono = late_sold + REFUND - 0.001
    assert run(db, timeline) == []
    hands.mono = late_sold + REFUND
    assert run(db, timeline) == [("refund_due", "order-late")]

    # Every sale kept its wall-clock label, and whether that clock was synced when sold.
    rows = {r["order_id"]: r for r in db.execute("SELECT * FROM orders")}
    assert rows["order-early"]["clock_synced"] == 0 and rows["order-late"]["clock_synced"] == 1
    assert rows["order-early"]["created_at"].startswith("2025-06-01T10:00:00")
    assert rows["order-late"]["created_at"].startswith("2025-05-31T10:31")
    kinds = [json.loads(p)["event"]["type"] for (p,) in db.execute(
        "SELECT payload FROM outbox WHERE kind = 'event'")]
    assert sorted(kinds) == ["mismatch", "mismatch", "refund_due", "refund_due"]
    assert outbox.depth(db) > 0


def test_ages_survive_a_restart_and_a_reboot(tmp_path: Path) -> None:
    path = tmp_path / "kit.db"
    db = open_db(path)
    hands = Hands(synced=False)
    timeline = resumed(db, hands)
    hands.mono = 500.0
    sell(db, "order-1", timeline)
    hands.mono = 600.0
    db.execute("BEGIN")
    clock.note_seen(db, timeline.now())  # the stop
    db.execute("COMMIT")
    db.close()

    # The daemon restarts in the same boot: the age is exact.
    db = store.connect(path)
    hands.mono = 500.0 + MISMATCH - 0.001
    timeline = resumed(db, hands)
    assert run(db, timeline) == []
    hands.mono = 500.0 + MISMATCH
    assert run(db, timeline) == [("mismatch", "order-1")]

    # A reboot with an unsynced clock: the monotonic clock starts again at 0, and the wall
    # clock says a week went by. The age counts only what is sure: its age when the store last
    # saw the timeline (at the restart, 1800 s less a millisecond), then the time since boot.
    # Late, never early.
    sure = MISMATCH - 0.001
    hands.boot_id, hands.mono = "boot-2", 5.0
    hands.wall += 7 * DAY
    timeline = resumed(db, hands)
    hands.mono = REFUND - sure - 0.01
    assert run(db, timeline) == []
    hands.mono = REFUND - sure + 0.01
    assert run(db, timeline) == [("refund_due", "order-1")]


def test_a_reboot_with_a_synced_clock_counts_the_time_off(tmp_path: Path) -> None:
    db = open_db(tmp_path / "kit.db")
    hands = Hands(synced=True)
    timeline = resumed(db, hands)
    sell(db, "order-1", timeline)
    hands.tick(100)
    db.execute("BEGIN")
    clock.note_seen(db, timeline.now())
    db.execute("COMMIT")
    # Off for 1000 s, then 200 s since the new boot, synced on both sides: 1300 s old.
    hands.boot_id, hands.mono = "boot-2", 200.0
    hands.wall += 1200.0
    timeline = resumed(db, hands)
    hands.mono = 200.0 + MISMATCH - 1300.0 - 0.01
    assert run(db, timeline) == []
    hands.mono += 0.02
    assert run(db, timeline) == [("mismatch", "order-1")]
