"""Retention on the running kit: the supervised part prunes what HQ settled and the printer
printed, keeps what the broker never had, and a restart carries on.

Real parts: ``dropkit sim`` in a subprocess (its simulated printer printing every receipt), a
real Mosquitto and ``dropkit hq``; the kit's store is read beside it, read-only. The retention
is one second, so its rounds come every second.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

from agent.ops.harness import SimKit, wait_for
from tests.conftest import MakeStall

ROOT = Path(__file__).resolve().parent.parent


def count(kit: SimKit, sql: str) -> int:
    with contextlib.closing(kit.open_store()) as db:
        return db.execute(sql).fetchone()[0]


def sell(kit: SimKit, orders: int) -> None:
    for _ in range(orders):
        answer = kit.place([{"sku": "T-1", "qty": 1}])
        assert answer.status == 201, answer


def settled_and_pruned(kit: SimKit, sales: int) -> bool:
    """Every sale settled by HQ, every receipt printed, and the store down to its newest
    message and print job."""
    return (count(kit, "SELECT count(*) FROM orders WHERE status = 'reconciled'") == sales
            and count(kit, "SELECT count(*) FROM outbox") <= 1
            and count(kit, "SELECT count(*) FROM print_jobs") <= 1)


def verify(state: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "agent", "receipts", "verify", "--state-dir",
                           str(state)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def test_retention_prunes_the_settled_keeps_the_unrelayed_and_survives_a_restart(
        stall: MakeStall) -> None:
    around = stall({"id": "kit-keep", "retention_days": 1 / 86400},
                   [("T-1", "Tee", 100, 1000)], paper_aside=True)
    broker, hq, state = around.broker, around.hq, around.state
    kit = around.start_kit()

    sell(kit, 10)
    wait_for(lambda: settled_and_pruned(kit, 10), 60, "10 sales settled, printed and pruned")
    # The kit says so just after its delete commits, so the line may come a moment after.
    wait_for(lambda: any("retention: pruned" in line for line in kit.log), 10,
             "the kit's log line for the pruning")
    assert verify(state) == "receipt chain OK: 10 links"
    last_id = count(kit, "SELECT max(id) FROM outbox")

    # The broker goes: sales wait in the outbox, and pruning rounds (their receipts' jobs are
    # pruned once printed) leave every one of them there.
    broker.stop()
    wait_for(lambda: kit.health()["uplink"]["state"] != "online", 30, "the uplink down")
    sell(kit, 5)
    wait_for(lambda: count(kit, "SELECT count(*) FROM print_jobs WHERE state = 'printed'") == 1
             and count(kit, "SELECT count(*) FROM print_jobs") == 1, 60,
             "the offline sales' receipts printed and their jobs pruned")
    assert count(kit, "SELECT count(*) FROM outbox WHERE kind = 'sale' AND relayed_at IS NULL "
                      f"AND id > {last_id}") == 5

    # A restart, the broker back: the waiting sales go to HQ, new ones too, pruning goes on.
    assert kit.stop() == 0
    broker.start()
    kit.start()
    sell(kit, 5)
    wait_for(lambda: settled_and_pruned(kit, 20), 90, "20 sales settled and pruned")
    assert count(kit, "SELECT min(id) FROM outbox") > last_id, "an outbox id was given twice"
    assert verify(state) == "receipt chain OK: 20 links"
    assert hq.query("SELECT count(*) FROM sales WHERE kit_id = 'kit-keep'")[0][0] == 20
    assert kit.stop() == 0
