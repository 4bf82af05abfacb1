"""Answer times at a drop's open, beside the plain order path, in the same run.

Run: ``.venv/bin/python bench/drop.py`` (``--customers N``, ``--units N``, ``--rounds N``).

The agent: ``dropkit sim`` in its own process (receipt printing off, as in bench/orders.py).
Each round loads a manifest whose drop item (``--units`` of it, one per customer) opens two
seconds later; ``--customers`` clients, each from a loopback address of its own (a phone each),
connect first, wait for the kit to say the item is open, then all send their reservation at
once. Each answer's time runs from its request being written to its answer read. Then, on the
same kit, the same number of clients do the same at once on the plain path: staff's sales (the
till) and customers' reservations of an item that is not a drop. The figures: p50, p99 and
the slowest answer of each, and the drop's p99 over the plain sale's; absolute figures move
with the machine, the ratio is what to watch.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from orders import Client, percentile, start_kit


async def get_json(address: str, path: str) -> dict:
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET %s HTTP/1.1\r\nHost: kit\r\nConnection: close\r\n\r\n" % path.encode())
    raw = await reader.read()
    writer.close()
    return json.loads(raw.partition(b"\r\n\r\n")[2])


async def put_manifest(address: str, token: str, manifest: dict) -> None:
    host, port = address.split(":")
    client = Client(host, int(port), token)
    await client.connect()
    request = (b"PUT /api/staff/manifest HTTP/1.1\r\nHost: kit\r\nContent-Type: application/json"
               b"\r\nAuthorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s")
    body = json.dumps(manifest).encode()
    client.writer.write(request % (token.encode(), len(body), body))
    head = await client.reader.readuntil(b"\r\n\r\n")
    assert b" 200 " in head.split(b"\r\n")[0], head
    client.close()


def source(n: int) -> str:
    """The loopback address of customer ``n``: a phone of its own."""
    return f"127.0.{1 + n // 250}.{1 + n % 250}"


async def burst(address: str, customers: int, body_of, token: str = "",
                wait_open: str = "") -> tuple[list[float], list[int]]:
    """``customers`` clients connected first, then sending at once (once ``wait_open`` is on
    sale, by the kit's clock); their answer times and statuses."""
    host, port = address.split(":")
    clients = [Client(host, int(port), token, source(n)) for n in range(customers)]
    await asyncio.gather(*(client.connect() for client in clients))
    while wait_open:
        items = (await get_json(address, "/api/manifest"))["items"]
        if next(item for item in items if item["sku"] == wait_open)["opens_in_s"] == 0:
            break
        await asyncio.sleep(0.01)

    async def one(n: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        status, _ = await clients[n].post("/api/orders", body_of(n))
        return time.perf_counter() - t0, status

    answers = await asyncio.gather(*(one(n) for n in range(customers)))
    for client in clients:
        client.close()
    return [took for took, _ in answers], [status for _, status in answers]


def order(sku: str, n: int) -> bytes:
    return json.dumps({"order_id": str(uuid.uuid4()), "device": f"bench-{n:05}-{uuid.uuid4()}",
                       "lines": [{"sku": sku, "qty": 1}]}).encode()


def row(name: str, latencies: list[float]) -> str:
    return (f"{name:<26} {len(latencies):>6} {percentile(latencies, 50) * 1000:>8.1f} "
            f"{percentile(latencies, 99) * 1000:>8.1f} {max(latencies) * 1000:>8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--units", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropkit-bench-") as tmp:
        tmp_path = Path(tmp)
        manifest = tmp_path / "manifest.toml"
        manifest.write_text('version = "bench"\n[[items]]\nsku = "PLAIN-1"\nname = "Plain"\n'
                            'price_cents = 100\nqty = 1000000\n')
        proc, address, token, _ = start_kit(tmp_path / "state", manifest)
        drop, sales, holds = [], [], []
        try:
            for r in range(args.rounds):
                sku = f"DROP-{r}"
                opens = datetime.now(UTC) + timedelta(seconds=2)
                asyncio.run(put_manifest(address, token, {"version": f"bench-{r}", "items": [
                    {"sku": "PLAIN-1", "name": "Plain", "price_cents": 100, "qty": 1000000},
                    {"sku": sku, "name": "Drop", "price_cents": 100, "qty": args.units,
                     "limit_per_customer": 1, "opens_at": opens.isoformat()}]}))
                took, statuses = asyncio.run(burst(address, args.customers,
                                                   lambda n, sku=sku: order(sku, n),
                                                   wait_open=sku))
                assert sorted(statuses) == [201] * args.units + [409] * (
                    args.customers - args.units), sorted(set(statuses))
                drop += took
                took, statuses = asyncio.run(burst(address, args.customers,
                                                   lambda n: order("PLAIN-1", n), token))
                assert set(statuses) == {201}, set(statuses)
                sales += took
                took, statuses = asyncio.run(burst(address, args.customers,
                                                   lambda n: order("PLAIN-1", n)))
                assert set(statuses) == {201}, set(statuses)
                holds += took
        finally:
            proc.terminate()
            proc.wait()
    print(f"{args.customers} customers at once, {args.rounds} rounds; answer times in ms")
    print(f"{'':<26} {'answers':>6} {'p50':>8} {'p99':>8} {'max':>8}")
    print(row(f"drop: {args.units} units at the open", drop))
    print(row("plain sales (staff)", sales))
    print(row("plain reservations", holds))
    print(f"drop p99 / plain sale p99: {percentile(drop, 99) / percentile(sales, 99):.2f}")


if __name__ == "__main__":
    main()
