"""Bytes the kit writes to its storage per order, beside a bare SQLite insert in the same run.

Run: ``.venv/bin/python bench/writes.py`` (``--orders N`` per case, ``--clients 1,32``,
``--printer off,sim``, ``--where`` for the pages each sale touches, ``--season`` for the
database size after 10,000 orders with retention on, ``--kit DIR`` to measure another checkout
of the kit, such as ``main``, in the same session; ``--state-dir DIR`` on the disk to measure,
which must not be a tmpfs: a tmpfs writes nothing to a block device and would read 0).

The kit's figure: ``dropkit sim`` in its own process takes the orders over HTTP (one client
after another, or many at once, when the store's group commit shares one commit among them);
it is the growth of ``write_bytes`` (what the process caused to be sent to the block device)
and ``syscw`` (write calls) in ``/proc/<pid>/io`` from just before the first order to just
after the kit's orderly stop, divided by the orders. The stop is counted because it closes the
store, which checkpoints what the write-ahead log still holds (so every checkpoint is in the
figure) and writes the kit's identity mark. With the printer simulator (``--printer sim``) the
print queue's two commits per receipt are in it too; the simulator's own receipt files go to
a tmpfs, since a real printer is a device of its own (their write calls still count in
``syscw``, a few per receipt). Database growth: the store's pages (``page_count`` times
``page_size``, write-ahead log included) after the orders, less before, per order.

The baseline, in a process of its own in the same run on the same disk: a bare SQLite insert
of one row the size of a sale (its JSON, about 600 bytes) keyed by its order id, as an order
must be (a retry finds it by that id), in WAL mode with ``synchronous=FULL`` and SQLite's
defaults otherwise, one transaction each (from as many threads as the kit has clients), closed
at the end like the kit's store. (With an integer key instead, the bare insert writes a third
less: one b-tree instead of two.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.ops.harness import Broker, Hq, SimKit, poll, write_config  # noqa: E402
from bench.orders import bench_manifest, load  # noqa: E402

SKU = "BENCH-1"  # the item of bench/orders.py's manifest, which its clients buy
WHERE_ORDERS = 100
SALE_JSON = json.dumps({
    "order_id": str(uuid.uuid4()), "status": "queued", "clock_synced": True,
    "created_at": "2026-06-01T12:00:00.000+00:00", "updated_at": "2026-06-01T12:00:00.000+00:00",
    "lines": [{"sku": SKU, "name": "Bench", "qty": 1, "price_cents": 100, "amount_cents": 100}],
    "total_cents": 100, "payment": {"method": "cash", "status": "paid"},
    "receipt": {"seq": 1, "hash": "0" * 64}, "kit_id": "kit-bench", "trace_id": "0" * 32,
    "type": "sale"}, sort_keys=True, separators=(",", ":"))


def io_counters(pid: int | str) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = int(value)
    return fields


@dataclass
class Figures:
    """Per order: bytes to the block device, write calls, and database growth in bytes."""

    bytes: float
    writes: float
    growth: float


# -- the baseline ------------------------------------------------------------------------------

def baseline_child(directory: Path, orders: int, clients: int) -> None:
    """In its own process: the bare inserts, then this process's figures as one JSON line."""
    path = directory / "bare.db"
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE sales (order_id TEXT PRIMARY KEY, body TEXT NOT NULL)")
    before = io_counters("self")
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    remaining = iter(range(orders))
    lock = threading.Lock()

    def insert_all() -> None:
        own = sqlite3.connect(path, isolation_level=None, timeout=60)
        own.execute("PRAGMA synchronous=FULL")
        while True:
            with lock:
                if next(remaining, None) is None:
                    break
            own.execute("BEGIN IMMEDIATE")
            own.execute("INSERT INTO sales (order_id, body) VALUES (?, ?)",
                        (str(uuid.uuid4()), SALE_JSON))
            own.execute("COMMIT")
        own.close()

    threads = [threading.Thread(target=insert_all) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    growth = (db.execute("PRAGMA page_count").fetchone()[0] - pages) * \
        db.execute("PRAGMA page_size").fetchone()[0]
    db.close()  # the last connection checkpoints the log, as the kit's stop does
    after = io_counters("self")
    print(json.dumps({"bytes": (after["write_bytes"] - before["write_bytes"]) / orders,
                      "writes": (after["syscw"] - before["syscw"]) / orders,
                      "growth": growth / orders}))


def baseline(root: Path, orders: int, clients: int) -> Figures:
    directory = Path(tempfile.mkdtemp(prefix="bare-", dir=root))
    answer = subprocess.run([sys.executable, __file__, "--baseline-child", str(directory),
                             "--orders", str(orders), "--clients", str(clients)],
                            check=True, capture_output=True, text=True)
    shutil.rmtree(directory)
    return Figures(**json.loads(answer.stdout))


# -- the kit -----------------------------------------------------------------------------------

@contextmanager
def kit_from(source: Path | None):
    """Start ``dropkit sim`` from the checkout ``source`` (this one when None)."""
    if source is None:
        yield
        return
    cwd, pythonpath = os.getcwd(), os.environ.get("PYTHONPATH")
    os.chdir(source)
    os.environ["PYTHONPATH"] = str(source)
    try:
        yield
    finally:
        os.chdir(cwd)
        if pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = pythonpath


def store_bytes(state: Path) -> int:
    """The store's pages in bytes, what its write-ahead log holds included."""
    db = sqlite3.connect(f"file:{state / 'dropkit.db'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("PRAGMA page_count").fetchone()[0] * \
            db.execute("PRAGMA page_size").fetchone()[0]
    finally:
        db.close()


def settled(pid: int, quiet_s: float = 1.0, timeout: float = 20.0) -> None:
    """Wait until the process has written nothing for ``quiet_s`` (its start's writes done)."""
    deadline, last, since = time.monotonic() + timeout, io_counters(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = io_counters(pid)
        if (now["write_bytes"], now["syscw"]) != (last["write_bytes"], last["syscw"]):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def stopped_counters(kit: SimKit) -> dict[str, int]:
    """SIGTERM, then the counters once the kit says its store is closed (``/proc/<pid>/io``
    stays readable until the child is reaped, so it is stopped by hand)."""
    assert kit.proc is not None
    pid = kit.proc.pid
    kit.proc.send_signal(15)
    last = io_counters(pid)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            last = io_counters(pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        if any("stopped; store closed" in line for line in kit.log):
            return io_counters(pid)
        time.sleep(0.01)
    return last


def start_kit(state: Path, printer: bool, source: Path | None, clock_dir: Path,
              extra: dict[str, dict[str, Any]] | None = None) -> SimKit:
    state.mkdir(parents=True)
    manifest = bench_manifest(state.parent / f"{state.name}-manifest.toml")
    if printer:  # the simulator's receipt files are the printer's writes, not the kit's
        (state / "printer").symlink_to(Path(tempfile.mkdtemp(prefix="receipts-", dir=clock_dir)))
    config = write_config(state.parent / f"{state.name}.toml", {
        "kit": {"id": "kit-bench"}, "printer": {"enabled": printer},
        "orders": {"manifest": str(manifest)}, **(extra or {})})
    with kit_from(source):
        return SimKit(state, config).start(timeout=60)


def printed(kit: SimKit, orders: int) -> bool:
    db = kit.open_store()
    try:
        return db.execute("SELECT count(*) FROM print_jobs WHERE state = 'printed'"
                          ).fetchone()[0] >= orders
    finally:
        db.close()


def measure_kit(state: Path, orders: int, clients: int, printer: bool, source: Path | None,
                tmpfs: Path, where: bool) -> tuple[Figures, list[str]]:
    kit = start_kit(state, printer, source, tmpfs)
    try:
        assert kit.proc is not None
        settled(kit.proc.pid)
        pages_before = store_bytes(state)
        before = io_counters(kit.proc.pid)
        asyncio.run(load(address(kit), kit.token, clients, orders))
        if printer and poll(lambda: printed(kit, orders), 60 + orders / 5, 0.2) is None:
            raise SystemExit("the simulated printer did not print every receipt")
        growth = store_bytes(state) - pages_before
        pages = []
        if where:  # the log emptied, then a few sales more: what they put in it, page by page
            checkpoint(state)
            asyncio.run(load(address(kit), kit.token, clients, WHERE_ORDERS))
            if printer and poll(lambda: printed(kit, orders + WHERE_ORDERS), 300, 0.2) is None:
                raise SystemExit("the simulated printer did not print every receipt")
            pages = pages_touched(state, WHERE_ORDERS)
        after = stopped_counters(kit)
    finally:
        kit.stop()
    return Figures((after["write_bytes"] - before["write_bytes"]) / orders,
                   (after["syscw"] - before["syscw"]) / orders, growth / orders), pages


# -- where the bytes go ------------------------------------------------------------------------

def wal_commits(wal: bytes) -> list[list[int]]:
    """The page numbers of each commit in a write-ahead log (SQLite's WAL format)."""
    page_size = struct.unpack(">I", wal[8:12])[0]
    salts, offset, commits, current = wal[16:24], 32, [], []
    while offset + 24 + page_size <= len(wal):
        page, size_after_commit = struct.unpack(">II", wal[offset:offset + 8])
        if wal[offset + 8:offset + 16] != salts:
            break  # a frame of an earlier round of the log
        current.append(page)
        if size_after_commit:
            commits.append(current)
            current = []
        offset += 24 + page_size
    return commits


def checkpoint(state: Path) -> None:
    """Checkpoint the kit's store and empty its log, from this process."""
    db = sqlite3.connect(state / "dropkit.db", timeout=30)
    try:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def pages_touched(state: Path, sales: int) -> list[str]:
    """Pages per sale by b-tree, from the commits in the kit's write-ahead log (which held
    nothing before the last ``sales`` sales)."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "copy.db"
        wal = (state / "dropkit.db-wal").read_bytes()
        shutil.copy(state / "dropkit.db", copy)
        (Path(tmp) / "copy.db-wal").write_bytes(wal)
        db = sqlite3.connect(copy)
        trees = {row[1]: f"{row[0]} ({row[2]})"
                 for row in db.execute("SELECT name, pageno, pagetype FROM dbstat")}
        trees[1] = "page 1 (the file's header; sqlite_schema)"
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        db.close()
    commits = wal_commits(wal)
    counts = Counter(trees.get(page, f"page {page}")
                     for commit in commits for page in commit)
    frames = sum(counts.values())
    lines = [f"{len(commits)} commits for {sales} sales: {frames / sales:.2f} pages of "
             f"{page_size} bytes per sale (this measurement's own checkpoint perturbs the "
             f"bytes above a little)"]
    lines += [f"  {count / sales:6.2f}  {tree}" for tree, count in counts.most_common()]
    return lines


# -- a season -----------------------------------------------------------------------------------

def season(root: Path, orders: int, retention_s: float, source: Path | None) -> str:
    """``orders`` orders from 8 clients, settled by HQ, with retention ``retention_s`` (0: off);
    the store's size once the retention had its turn after the last answer."""
    broker = Broker(root / "broker").start()
    hq = Hq(broker, root / "hq.db")
    try:
        with kit_from(source):
            hq.start()
        extra = {"mqtt": broker.kit_mqtt(), "kit": {"id": "kit-bench",
                                                      "retention_days": retention_s / 86400}}
        state = root / "kit"
        kit = start_kit(state, False, source, root, extra)
        try:
            assert kit.proc is not None
            settled(kit.proc.pid)
            before = io_counters(kit.proc.pid)
            started = time.monotonic()
            for done in range(0, orders, 1000):  # in steps: the load's bookkeeping stays small
                asyncio.run(load(address(kit), kit.token, 8, min(1000, orders - done)))
            took = time.monotonic() - started
            with contextlib.closing(kit.open_store()) as db:
                def count(sql: str) -> int:
                    return db.execute(sql).fetchone()[0]
                answered = poll(lambda: count("SELECT count(*) FROM orders WHERE status = "
                                              "'reconciled'") >= orders, 300, 0.5)
                if retention_s:  # the retention's next rounds, until only the newest is left
                    poll(lambda: count("SELECT count(*) FROM outbox") <= 1,
                         retention_s * 2 + 60, 0.5)
                messages = count("SELECT count(*) FROM outbox")
            after = stopped_counters(kit)
        finally:
            kit.stop()
        size = (state / "dropkit.db").stat().st_size
        return (f"retention {f'{retention_s:g} s' if retention_s else 'off':>6}: {orders} orders "
                f"in {took:.0f} s, {'all' if answered else 'NOT all'} settled by HQ; "
                f"{messages} outbox rows left; the store {size / 1e6:.2f} MB "
                f"({size / orders:,.0f} bytes per order); "
                f"{(after['write_bytes'] - before['write_bytes']) / orders:,.0f} bytes written "
                f"per order")
    finally:
        hq.stop()
        broker.stop()


def address(kit: SimKit) -> str:
    host, port = kit.address
    return f"{host}:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per case")
    parser.add_argument("--clients", default="1,32")
    parser.add_argument("--printer", default="off,sim")
    parser.add_argument("--kit", metavar="DIR", help="measure the kit of another checkout")
    parser.add_argument("--state-dir", help="a directory on the disk to measure")
    parser.add_argument("--where", action="store_true",
                        help="also show the pages each sale touches, by b-tree")
    parser.add_argument("--season", action="store_true",
                        help="instead: --orders orders (10000 is the figure) settled by HQ, "
                             "with retention on and off: the store's size")
    parser.add_argument("--retention-s", type=float, default=20.0,
                        help="the season's retention, in seconds")
    parser.add_argument("--baseline-child", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        baseline_child(Path(args.baseline_child), args.orders, int(args.clients))
        return
    if args.state_dir:
        Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    # A directory of this run's own, so a run after an interrupted one starts clean.
    root = Path(tempfile.mkdtemp(prefix="dropkit-writes-", dir=args.state_dir))
    source = Path(args.kit).resolve() if args.kit else None
    tmpfs = Path(tempfile.mkdtemp(prefix="dropkit-receipts-", dir="/dev/shm"))
    try:
        if args.season:
            for keep_s in (args.retention_s, 0.0):
                print(season(root / f"season-{keep_s:g}", args.orders, keep_s, source))
            return
        print(f"kit {source or ROOT}, {args.orders} orders per case, store in {root}")
        print(f"{'printer':>7} {'clients':>7} {'kit B/order':>12} {'calls':>6} "
              f"{'growth B':>9} {'bare B/ins':>11} {'calls':>6} {'ratio':>6}")
        for printer in args.printer.split(","):
            for clients in (int(c) for c in args.clients.split(",")):
                case = root / f"{printer}-{clients}"
                kit, where = measure_kit(case / "kit", args.orders, clients, printer == "sim",
                                         source, tmpfs, args.where)
                bare = baseline(root, args.orders, clients)
                print(f"{printer:>7} {clients:>7} {kit.bytes:>12,.0f} {kit.writes:>6.1f} "
                      f"{kit.growth:>9,.0f} {bare.bytes:>11,.0f} {bare.writes:>6.1f} "
                      f"{kit.bytes / bare.bytes:>6.2f}")
                for line in where:
                    print("        " + line)
                shutil.rmtree(case, ignore_errors=True)
    finally:
        shutil.rmtree(tmpfs, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
