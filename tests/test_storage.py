"""A full disk is a clear refusal, and the store knows it is the kit's store.

Real parts: ``dropkit sim`` in a subprocess on loopback, its state directory on a real tmpfs
(mounted here, which needs root), a real Mosquitto and ``dropkit hq`` for the uplink, and real
SQLite files damaged with plain file operations.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ops.harness import SimKit, new_order_id, wait_for, write_config, write_manifest
from tests.conftest import MakeStall

MAX_ORDERS = 5000
"""The 3 MB disk fills long before this many orders; a bound on the loop all the same."""
REFUSED_IN_A_ROW = 20


def mount_tmpfs(where: Path, size: str) -> None:
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                   check=True)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs of the test's own, unmounted after it."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (run the suite as root to test a full disk)")
    where = tmp_path / "tmpfs"
    where.mkdir()
    mount_tmpfs(where, "3m")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


def order(kit: SimKit) -> tuple[str, object]:
    order_id = new_order_id()
    return order_id, kit.place([{"sku": "T-1", "qty": 1}], order_id)


def job_states(kit: SimKit) -> dict[str, str]:
    """Each order's receipt job and its state, from the running kit's store (read-only)."""
    with contextlib.closing(kit.open_store()) as db:
        return dict(db.execute("SELECT order_id, state FROM print_jobs WHERE kind = 'receipt'"))


def test_full_disk_refuses_keeps_what_it_confirmed_and_resumes_by_itself(
        tmpfs: Path, stall: MakeStall) -> None:
    # The simulated printer keeps its paper (receipt images) off the kit's disk: in the field
    # the printer is not on the SD card.
    around = stall({"id": "kit-full", "storage_warn_mb": 1},
                   [("T-1", "Tee", 100, 1_000_000)], state=tmpfs / "kit", paper_aside=True)
    hq, state, config = around.hq, around.state, around.config
    kit = around.start_kit()

    confirmed: dict[str, dict] = {}
    statuses: Counter[int] = Counter()
    refused_in_a_row, warned = 0, False
    for _ in range(MAX_ORDERS):
        order_id, answer = order(kit)
        statuses[answer.status] += 1
        assert answer.status in (201, 503, 507), (answer.status, answer.data)
        if answer.status == 201:
            confirmed[order_id] = answer.data["receipt"]
            refused_in_a_row = 0
        else:
            assert answer.data["error"] == "storage_full", answer.data
            assert "storage is full" in answer.data["detail"]
            refused_in_a_row += 1
            if refused_in_a_row >= REFUSED_IN_A_ROW:
                break
        if not warned and free_bytes(tmpfs) < 1024 * 1024:
            # Below the warning: staff are told before the disk is full.
            wait_for(lambda: kit.health()["storage"]["state"] in ("low", "full"), 15,
                     "health shows storage low")
            warned = True
    assert refused_in_a_row >= REFUSED_IN_A_ROW, f"the disk never filled: {statuses}"
    assert warned and len(confirmed) > 10, (warned, statuses)

    health = kit.health()
    assert health["storage"]["state"] == "full", health["storage"]
    assert "storage_full" in health["alerts"] and health["status"] == "degraded"
    # Reads go on.
    assert kit.request("GET", "/api/manifest").status == 200
    some = next(iter(confirmed))
    assert kit.request("GET", f"/api/orders/{some}").data["receipt"] == confirmed[some]

    # kill -9 while full, and start again on the same full disk: every 201 is there.
    kit.kill()
    kit = SimKit(state, config).start()
    for order_id, receipt in confirmed.items():
        stored = kit.request("GET", f"/api/orders/{order_id}")
        assert stored.status == 200 and stored.data["receipt"] == receipt, order_id
    _, answer = order(kit)
    assert answer.status == 507, (answer.status, answer.data)

    # Room again: orders, receipts and the uplink go on without a restart.
    subprocess.run(["mount", "-o", "remount,size=64m", str(tmpfs)], check=True)
    wait_for(lambda: kit.health()["storage"]["state"] == "ok", 20, "storage ok again")
    for _ in range(5):
        order_id, answer = order(kit)
        assert answer.status == 201, (answer.status, answer.data)
        confirmed[order_id] = answer.data["receipt"]
    wait_for(lambda: all(job_states(kit).get(order_id) in ("printed", "unsure")
                         for order_id in confirmed) and
             "pending" not in job_states(kit).values(), 60, "every receipt printed")
    wait_for(lambda: kit.health()["queue_depth"] == 0, 60, "the outbox drained")
    at_hq = {row[0] for row in hq.query("SELECT order_id FROM sales WHERE kit_id = ?",
                                        "kit-full")}
    assert set(confirmed) <= at_hq
    assert kit.stop() == 0

    with contextlib.closing(kit.open_store()) as db:
        seqs = [row[0] for row in db.execute("SELECT seq FROM receipts ORDER BY seq")]
        events = [{**json.loads(row[0])["event"], "ts": json.loads(row[0])["ts"]}
                  for row in db.execute("SELECT payload FROM outbox WHERE kind = 'event'")]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) == len(confirmed)
    # The storage events the full disk held back were written once it had room.
    storage = [event["state"] for event in sorted(events, key=lambda event: event["ts"])
               if event["type"] == "storage"]
    assert "full" in storage and storage[-1] == "ok", storage
    verify = subprocess.run([sys.executable, "-m", "agent", "receipts", "verify",
                             "--state-dir", str(state)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr


# -- the store knows it is the kit's ---------------------------------------------------------


def kit_config(tmp_path: Path) -> Path:
    manifest = write_manifest(tmp_path / "manifest.toml", [("T-1", "Tee", 100, 1000)])
    return write_config(tmp_path / "agent.toml", {"kit": {"id": "kit-own"},
                                                  "orders": {"manifest": str(manifest)}})


def sell(state: Path, config: Path, orders: int) -> None:
    kit = SimKit(state, config).start()
    for _ in range(orders):
        assert order(kit)[1].status == 201
    assert kit.stop() == 0


def start_refused(state: Path, config: Path, *, reset_hint: bool = True) -> str:
    """Start ``dropkit sim`` on ``state``; it must refuse with one line, exit 2."""
    done = subprocess.run([sys.executable, "-m", "agent", "sim", "--state-dir", str(state),
                           "--config", str(config), "--http-port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("dropkit: store "), done.stderr
    assert ("dropkit store reset --i-know" in lines[-1]) is reset_hint, lines[-1]
    return lines[-1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def empty(db: Path, rng: random.Random) -> None:
    db.write_bytes(b"")


def truncate(db: Path, rng: random.Random) -> None:
    with open(db, "r+b") as file:
        file.truncate(db.stat().st_size // 2)


def overwrite_pages(db: Path, rng: random.Random) -> None:
    pages = db.stat().st_size // 4096
    with open(db, "r+b") as file:
        for page in rng.sample(range(2, pages), 3):
            file.seek(page * 4096)
            file.write(rng.randbytes(4096))


@pytest.mark.parametrize(("damage", "said"), [
    (empty, "the database is empty, but this kit has issued receipts up to #40"),
    (truncate, "is damaged"),
    (overwrite_pages, "is damaged"),
])
def test_a_damaged_or_emptied_database_is_refused_at_start(tmp_path: Path, damage,
                                                           said: str) -> None:
    config, state = kit_config(tmp_path), tmp_path / "kit"
    sell(state, config, 40)
    db = state / "dropkit.db"
    assert not (state / "dropkit.db-wal").exists()  # the orderly stop checkpointed it
    damage(db, random.Random(7))
    before = digest(db)
    line = start_refused(state, config)
    assert said in line, line
    assert digest(db) == before, "the refused start changed the database"

    # Starting over is deliberate, and keeps the old files.
    refused = subprocess.run([sys.executable, "-m", "agent", "store", "reset",
                              "--state-dir", str(state)], capture_output=True, text=True)
    assert refused.returncode == 2 and db.exists()
    reset = subprocess.run([sys.executable, "-m", "agent", "store", "reset", "--i-know",
                            "--state-dir", str(state)], capture_output=True, text=True)
    assert reset.returncode == 0, reset.stderr
    aside = [path for path in state.iterdir() if path.name.startswith("set-aside-")]
    assert len(aside) == 1 and str(aside[0]) in reset.stdout
    assert digest(aside[0] / "dropkit.db") == before
    assert (aside[0] / "dropkit.identity").exists() and not db.exists()
    kit = SimKit(state, config).start()
    assert order(kit)[1].data["receipt"]["seq"] == 1
    kit.stop()


def test_a_rolled_back_or_replaced_database_is_refused_at_start(tmp_path: Path) -> None:
    config, state = kit_config(tmp_path), tmp_path / "kit"
    sell(state, config, 5)
    db = state / "dropkit.db"
    copy = tmp_path / "old.db"
    shutil.copy(db, copy)
    sell(state, config, 5)
    shutil.copy(copy, db)  # the card restored from an older copy
    line = start_refused(state, config)
    assert "ends at receipt #5, but this kit had issued receipt #10: it was rolled back" in line

    other = tmp_path / "other"
    sell(other, config, 12)  # another kit's store, with more receipts than this one
    shutil.copy(other / "dropkit.db", db)
    assert "the database is not this kit's" in start_refused(state, config)
    db.unlink()
    assert "the database is missing" in start_refused(state, config)


def test_a_config_that_names_another_kit_says_to_fix_the_config_not_to_start_over(
        tmp_path: Path) -> None:
    config, state = kit_config(tmp_path), tmp_path / "kit"
    sell(state, config, 2)
    renamed = write_config(tmp_path / "renamed.toml", {"kit": {"id": "kit-other"}})
    line = start_refused(state, renamed, reset_hint=False)
    assert "this store belongs to kit kit-own, but the config names kit kit-other" in line
    assert 'set [kit] id = "kit-own" in the config' in line


def test_a_database_replaced_under_the_running_kit_stops_confirming(tmp_path: Path) -> None:
    config, state = kit_config(tmp_path), tmp_path / "kit"
    kit = SimKit(state, config).start()
    assert order(kit)[1].status == 201
    db = state / "dropkit.db"
    stranger = tmp_path / "stranger.db"
    with contextlib.closing(sqlite3.connect(stranger)) as other:
        other.execute("CREATE TABLE t (x)")
    os.replace(stranger, db)
    # Noticed without an order: the watch looks at the files.
    wait_for(lambda: kit.health()["storage"]["state"] == "lost", 15, "store lost in health")
    health = kit.health()
    assert "store_lost" in health["alerts"] and health["status"] == "degraded"
    _, answer = order(kit)
    assert answer.status == 503 and answer.data["error"] == "store_lost", answer.data
    assert kit.request("GET", "/api/manifest").status == 200
    kit.stop()
