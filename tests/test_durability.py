"""Durability proven by killing: kill -9 at random moments while clients order without pause."""

from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import new_order_id, write_manifest

CLIENTS = 8
RESTARTS = 20
CONFIRMED_EACH_ROUND = 10
"""Each round's kill waits for this many orders confirmed in the round (over twenty rounds,
two hundred to prove anything): on a loaded machine a kit just started and its eight clients
can take longer than any fixed moment to confirm the first, and a round killed before it
proves nothing."""
FIRST_ORDERS_S = 60
"""Generous: a kit that confirms no ten orders in a minute after a restart has failed."""
KILL_WITHIN_S = 0.5
"""Once the round has its orders, the kill lands at a random moment of this much more load."""


def test_kill_9_twenty_times_loses_no_confirmed_order(kit_factory, tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path / "m.toml", [("A-1", "Item A", 250, 1_000_000),
                                                    ("B-2", "Item B", 125, 1_000_000)])
    config = tmp_path / "agent.toml"
    config.write_text(f'[kit]\nid = "kill-test"\n[orders]\nmanifest = "{manifest}"\n')
    state = tmp_path / "state"
    rng = random.Random(20261127)
    confirmed: dict[str, dict] = {}  # order_id -> the 201 answer
    attempts = 0
    answered = threading.Condition()  # held while counting; notified on each confirmation

    for round_ in range(RESTARTS):
        kit = kit_factory(state, config)
        stop = threading.Event()
        before = len(confirmed)

        def client_loop(seed: int, kit=kit, stop=stop) -> None:
            nonlocal attempts
            local = random.Random(seed)
            with kit.client() as client:
                while not stop.is_set():
                    lines = [{"sku": local.choice(["A-1", "B-2"]), "qty": local.randint(1, 3)}]
                    order_id = new_order_id()
                    try:
                        answer = kit.order(client, lines, order_id)
                    except httpx.HTTPError:
                        return  # the daemon died under us: this order was never confirmed
                    with answered:
                        attempts += 1
                        if answer.status_code == 201:
                            confirmed[order_id] = answer.json()
                            answered.notify_all()

        threads = [threading.Thread(target=client_loop, args=(rng.random(),))
                   for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        with answered:
            took = answered.wait_for(
                lambda before=before: len(confirmed) - before >= CONFIRMED_EACH_ROUND,
                FIRST_ORDERS_S)
            in_round = len(confirmed) - before
        if took:  # the scenario: kill -9 at a random moment of the load
            time.sleep(rng.uniform(0, KILL_WITHIN_S))
        kit.kill()
        stop.set()
        for thread in threads:
            thread.join()
        assert took, (f"round {round_}: the kit confirmed {in_round} orders in "
                      f"{FIRST_ORDERS_S} s")

    kit = kit_factory(state, config)
    with kit.client() as client:
        for order_id, answer in confirmed.items():
            stored = client.get(f"/api/orders/{order_id}")
            assert stored.status_code == 200, f"confirmed order {order_id} lost"
            assert stored.json()["receipt"] == answer["receipt"]
            assert stored.json()["lines"] == answer["lines"]
    kit.kill()

    db = sqlite3.connect(state / "dropkit.db")
    # None twice: one order row, one sale link and one outbox message per order id.
    assert db.execute("SELECT count(*), count(DISTINCT order_id) FROM orders").fetchone() == \
        db.execute("SELECT count(*), count(DISTINCT order_id) FROM receipts").fetchone()
    orders = db.execute("SELECT count(*) FROM orders").fetchone()[0]
    assert db.execute("SELECT count(*), count(DISTINCT key) FROM outbox WHERE kind = 'sale'"
                      ).fetchone() == (orders, orders)
    # Each sale has exactly one receipt print job, queued with it.
    assert db.execute("SELECT count(*), count(DISTINCT order_id) FROM print_jobs "
                      "WHERE kind = 'receipt'").fetchone() == (orders, orders)
    # Stock agrees with the lines sold.
    for sku, sold in db.execute("SELECT sku, sold FROM items"):
        lines = db.execute("SELECT coalesce(sum(qty), 0) FROM order_lines WHERE sku = ?",
                           (sku,)).fetchone()[0]
        assert sold == lines
    db.close()
    verify = subprocess.run([sys.executable, "-m", "agent", "receipts", "verify",
                             "--state-dir", str(state)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "receipt chain OK" in verify.stdout
    print(f"{len(confirmed)} confirmed of {attempts} answered attempts over {RESTARTS} kills")
