"""Durable orders per second through the kit's HTTP endpoint, beside a raw SQLite baseline.

Run: ``.venv/bin/python bench/orders.py`` (``--orders N`` per concurrency level).

The agent's figure: ``dropkit sim`` in its own process, HTTP/1.1 keep-alive clients on loopback,
each order answered 201 only after its commit is durable. The baseline, measured in the same
run on the same disk: plain ``sqlite3`` inserting the rows one sale writes (order, line, receipt
link, stock ledger entry, outbox message, stock update) with ``synchronous=FULL`` in WAL mode,
one transaction each. The ratio is what to watch; absolute figures move with the machine.
Also printed: resident memory of ``dropkit sim`` after the orders and the time from process
start to its first answered request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class Client:
    """A minimal keep-alive HTTP/1.1 client, so the load generator costs little CPU; with a
    ``token``, staff's (a sale rather than a customer's reservation), from ``source`` when
    given (another loopback address: another customer)."""

    def __init__(self, host: str, port: int, token: str = "", source: str = "") -> None:
        self.host, self.port, self.source = host, port, source
        self.auth = b"Authorization: Bearer %s\r\n" % token.encode() if token else b""

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, local_addr=(self.source, 0) if self.source else None)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"%sContent-Length: %d\r\n\r\n%s" % (
                              path.encode(), self.host.encode(), self.auth, len(body), body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def bench_manifest(path: Path) -> Path:
    """The manifest the clients buy from: one item, stock for any run."""
    path.write_text('version = "bench"\n[[items]]\nsku = "BENCH-1"\nname = "Bench"\n'
                    'price_cents = 100\nqty = 1000000\n')
    return path


def start_kit(state: Path, manifest: Path, prefix: Sequence[str] = (),
              preexec_fn: Callable[[], None] | None = None,
              ) -> tuple[subprocess.Popen[str], str, str, float]:
    """``dropkit sim`` on ``manifest`` (its command after ``prefix``; ``preexec_fn`` runs in
    the child before it starts): the process, its address, its staff token and the time from
    its start to its first answer."""
    config = state.parent / "agent.toml"
    # The simulated printer would run inside the daemon's process and render every receipt;
    # a kit's printer is a device of its own, so the benchmark measures order capture alone.
    config.write_text(f'[orders]\nmanifest = "{manifest}"\n[printer]\nenabled = false\n')
    started = time.perf_counter()
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "agent", "sim", "--state-dir",
                             str(state), "--http-port", "0", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT, preexec_fn=preexec_fn)
    assert proc.stdout is not None
    url = ""
    for line in proc.stdout:
        if "is open at " in line:
            url = line.split("is open at ")[1].split()[0]
        if "staff token " in line:
            token = line.split("staff token ")[1].split(";")[0].strip()
            break
    else:
        raise SystemExit("dropkit sim did not start")
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    first_answer = asyncio.run(first_request(host, int(port), started))
    return proc, f"{host}:{port}", token, first_answer


async def first_request(host: str, port: int, started: float) -> float:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return time.perf_counter() - started


async def load(address: str, token: str, clients: int,
               orders: int) -> tuple[float, list[float]]:
    host, port = address.split(":")
    latencies: list[float] = []
    remaining = orders

    async def one_client() -> None:
        nonlocal remaining
        client = Client(host, int(port), token)
        await client.connect()
        while remaining > 0:
            remaining -= 1
            body = json.dumps({"order_id": str(uuid.uuid4()), "lines": [
                {"sku": "BENCH-1", "qty": 1}], "payment": {"method": "cash"}}).encode()
            t0 = time.perf_counter()
            status, _ = await client.post("/api/orders", body)
            latencies.append(time.perf_counter() - t0)
            assert status == 201, status
        client.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one_client() for _ in range(clients)))
    return orders / (time.perf_counter() - t0), latencies


def raw_baseline(path: Path, orders: int) -> float:
    """Plain sqlite3: the rows of one sale, synchronous=FULL, one transaction each."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript("""
        CREATE TABLE items (sku TEXT PRIMARY KEY, allocated INTEGER, sold INTEGER);
        CREATE TABLE orders (order_id TEXT PRIMARY KEY, seq INTEGER, created_at TEXT,
                             total_cents INTEGER, status TEXT);
        CREATE TABLE order_lines (order_id TEXT, line_no INTEGER, sku TEXT, qty INTEGER,
                                  price_cents INTEGER, PRIMARY KEY (order_id, line_no));
        CREATE TABLE receipts (seq INTEGER PRIMARY KEY, body TEXT, prev_hash TEXT, hash TEXT);
        CREATE TABLE stock_ledger (id INTEGER PRIMARY KEY, sku TEXT, delta INTEGER, order_id TEXT);
        CREATE TABLE outbox (id INTEGER PRIMARY KEY, payload TEXT, relayed_at TEXT);
        INSERT INTO items VALUES ('BENCH-1', 1000000000, 0);
    """)
    body = "x" * 300
    t0 = time.perf_counter()
    for seq in range(1, orders + 1):
        order_id = str(uuid.uuid4())
        db.execute("BEGIN")
        db.execute("UPDATE items SET sold = sold + 1 WHERE sku = 'BENCH-1'")
        db.execute("INSERT INTO stock_ledger (sku, delta, order_id) VALUES ('BENCH-1', 1, ?)",
                   (order_id,))
        db.execute("INSERT INTO receipts VALUES (?, ?, ?, ?)", (seq, body, "0" * 64, "1" * 64))
        db.execute("INSERT INTO orders VALUES (?, ?, 'now', 100, 'queued')", (order_id, seq))
        db.execute("INSERT INTO order_lines VALUES (?, 0, 'BENCH-1', 1, 100)", (order_id,))
        db.execute("INSERT INTO outbox (payload) VALUES (?)", (body,))
        db.execute("COMMIT")
    rate = orders / (time.perf_counter() - t0)
    db.close()
    return rate


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=2000, help="orders per level")
    parser.add_argument("--clients", default="1,8,32")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropkit-bench-", dir=os.environ.get("BENCH_DIR")) \
            as tmp:
        tmp_path = Path(tmp)
        manifest = bench_manifest(tmp_path / "manifest.toml")
        proc, address, token, first_answer = start_kit(tmp_path / "state", manifest)
        try:
            print(f"{'clients':>7} {'agent/s':>9} {'raw/s':>9} {'ratio':>6} {'p50 ms':>7} "
                  f"{'p99 ms':>7}")
            total = 0
            for clients in (int(c) for c in args.clients.split(",")):
                raw = raw_baseline(tmp_path / f"raw-{clients}.db", args.orders)
                rate, latencies = asyncio.run(load(address, token, clients, args.orders))
                total += args.orders
                print(f"{clients:>7} {rate:>9.0f} {raw:>9.0f} {rate / raw:>6.2f} "
                      f"{percentile(latencies, 50) * 1000:>7.2f} "
                      f"{percentile(latencies, 99) * 1000:>7.2f}")
            if total < 1000:
                asyncio.run(load(address, token, 8, 1000 - total))
                total = 1000
            print(f"resident memory of dropkit sim after {total} orders: "
                  f"{rss_mb(proc.pid):.1f} MB")
            print(f"process start to first answered request: {first_answer * 1000:.0f} ms")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
