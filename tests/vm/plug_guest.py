"""Inside the test VM, once per boot of the pulled-plug test (``test_pulled_plug.py``).

The host writes ``plan.json`` to the share before each boot; this script, run by the VM's test
runner as root with the kit's interpreter:

1. waits for the boot to finish and the agent's READY (its unit active: ``Type=notify``) and
   says so on the line channel with the boot's figures: ``READY {json}``;
2. reads the store as the kit left it after the cut (read-only, beside the running agent):
   every order id, the sale links per order, the receipt chain verified as
   ``dropkit receipts verify`` does, the stock sold against the order lines, SQLite's
   ``quick_check``; writes it to ``store-NN.json`` on the share, then ``STORE NN``;
3. retries, with the same ids and bodies, what may have been in flight at a cut: for each
   client of an earlier boot the plan names (with the last of its orders the host saw
   confirmed), the orders after that one which the store holds, and the one after those. The
   kit must answer 200 for an order it kept and 201 for one it did not; each answer is a line
   ``RETRY id status``, and ``RETRIED NN`` ends them;
4. then orders without pause from ``plan["clients"]`` clients until the plug is pulled, each 2xx
   answer written to the line channel the moment it came: ``OK id status``. Every order is a
   sale at the till (the staff token, from the kit's own loopback): without it the kit takes a
   customer's reservation, which holds stock but has no receipt until staff take its payment.
   Client ``c`` of boot ``b`` sends ``plug-bb-c-nnnnnn`` in order and the next only after an
   answer, so the store must hold, per client, an unbroken run of ids from 0.

A final boot (``plan["final"]``) stops after step 3 and reads the store again
(``store-NN-final.json``), and the runner powers the VM off.
"""

from __future__ import annotations

import http.client
import json
import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import Any

from guest import STAFF_TOKEN, agent_health, boot_timings, save, wait_until  # beside this script

from agent.core import receipts
from agent.core.orders import sale_matches_order

SHARE = Path(__file__).resolve().parent
PORT = Path("/dev/virtio-ports/vmtest.lines")  # lines.GUEST_PORT, as the guest sees it
STORE = Path("/var/lib/dropkit/dropkit.db")
SKU = "PLUG-1"
MANIFEST = {"version": "plug-1", "items": [
    {"sku": SKU, "name": "Pulled plug", "price_cents": 100, "qty": 1_000_000}]}


class Channel:
    """Lines to the host, one ``write()`` each, unbuffered."""

    def __init__(self) -> None:
        wait_until(PORT.exists, 60, f"{PORT} (virtio-serial)")
        self._fd = os.open(PORT, os.O_WRONLY)
        self._lock = threading.Lock()

    def say(self, line: str) -> None:
        with self._lock:
            os.write(self._fd, f"{line}\n".encode())


def order_body(order_id: str) -> bytes:
    return json.dumps({"order_id": order_id, "lines": [{"sku": SKU, "qty": 1}],
                       "payment": {"method": "cash"}}).encode()


def request(connection: http.client.HTTPConnection, method: str, path: str,
            body: bytes | None = None, token: str = "") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def connect() -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", 8080, timeout=60)


def ready(channel: Channel) -> dict[str, Any]:
    figures = {**boot_timings(),
               "write_cache": Path("/sys/block/vda/queue/write_cache").read_text().strip()}
    channel.say(f"READY {json.dumps(figures)}")
    return figures


def sell_the_plug_manifest() -> None:
    """The image's default manifest has 10 of one item: load one that never sells out."""
    connection = connect()
    try:
        _, manifest = request(connection, "GET", "/api/manifest")
        if manifest.get("version") != MANIFEST["version"]:
            status, answer = request(connection, "PUT", "/api/staff/manifest",
                                     json.dumps(MANIFEST).encode(), staff_token())
            if status != 200:
                raise RuntimeError(f"manifest refused: {status} {answer}")
    finally:
        connection.close()


def read_store() -> dict[str, Any]:
    """The store as the kit has it: read-only, in one read transaction."""
    db = sqlite3.connect(f"file:{STORE}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        db.execute("BEGIN")
        orders = [row[0] for row in db.execute("SELECT order_id FROM orders")]
        twice = {row[0]: row[1] for row in db.execute(
            "SELECT order_id, COUNT(*) FROM receipts WHERE kind = 'sale' "
            "GROUP BY order_id HAVING COUNT(*) != 1")}
        chain = receipts.verify(db, sale_matches_order)
        sold = db.execute("SELECT sold FROM items WHERE sku = ?", (SKU,)).fetchone()
        lines = db.execute("SELECT COALESCE(SUM(qty), 0) FROM order_lines WHERE sku = ?",
                           (SKU,)).fetchone()[0]
        ledger = db.execute("SELECT COALESCE(SUM(delta), 0) FROM stock_ledger "
                            "WHERE sku = ? AND field = 'sold'", (SKU,)).fetchone()[0]
        quick_check = [row[0] for row in db.execute("PRAGMA quick_check")]
        db.execute("COMMIT")
    finally:
        db.close()
    health = agent_health()
    return {"orders": orders, "sale_links_not_one": twice,
            "chain": {"ok": chain.ok, "links": chain.links, "broken_seq": chain.broken_seq,
                      "reason": chain.reason},
            "stock": {"items_sold": sold["sold"] if sold else 0, "order_lines": lines,
                      "ledger_sold": ledger},
            "quick_check": quick_check,
            "health": {"http_status": health["http_status"], "status": health["status"],
                       "storage": health["storage"]["state"], "alerts": health["alerts"]}}


def retries(groups: dict[str, int], orders: list[str]) -> list[str]:
    """Per client ``plug-bb-c`` whose order ``groups[client]`` the host saw confirmed last:
    the ids after it that the store holds, and the next one."""
    stored: dict[str, int] = {}
    for order_id in orders:
        client, _, sequence = order_id.rpartition("-")
        stored[client] = max(stored.get(client, -1), int(sequence))
    return [f"{client}-{sequence:06d}" for client, confirmed in sorted(groups.items())
            for sequence in range(confirmed + 1, stored.get(client, -1) + 2)]


def staff_token() -> str:
    return STAFF_TOKEN.read_text().strip()


def sell(connection: http.client.HTTPConnection, order_id: str,
         token: str) -> tuple[int, dict[str, Any]]:
    """One sale at the till: the staff token makes the order a sale, not a reservation."""
    return request(connection, "POST", "/api/orders", order_body(order_id), token)


def retry(channel: Channel, order_ids: list[str]) -> None:
    connection = connect()
    token = staff_token()
    try:
        for order_id in order_ids:
            status, answer = sell(connection, order_id, token)
            if status not in (200, 201) or not answer.get("receipt"):
                channel.say(f"REFUSED {order_id} {status} {json.dumps(answer)}")
                continue
            channel.say(f"RETRY {order_id} {status}")
    finally:
        connection.close()


def client(channel: Channel, boot: int, number: int) -> None:
    connection = connect()
    token = staff_token()
    for sequence in range(1_000_000):
        order_id = f"plug-{boot:02d}-{number}-{sequence:06d}"
        status, answer = sell(connection, order_id, token)
        if status != 201 or not answer.get("receipt"):  # a reservation has no receipt
            # Not a power cut (that would end this process): the kit refused a plain sale.
            channel.say(f"REFUSED {order_id} {status} {json.dumps(answer)}")
            return
        channel.say(f"OK {order_id} {status}")


def main() -> int:
    plan = json.loads((SHARE / "plan.json").read_text())
    boot = plan["boot"]
    channel = Channel()
    channel.say(f"BOOT {boot}")
    ready(channel)
    sell_the_plug_manifest()
    store = read_store()
    save(store, SHARE / f"store-{boot:02d}.json")
    channel.say(f"STORE {boot}")
    retry(channel, retries(plan["groups"], store["orders"]))
    channel.say(f"RETRIED {boot}")
    if plan["final"]:
        save(read_store(), SHARE / f"store-{boot:02d}-final.json")
        channel.say(f"FINAL {boot}")
        return 0
    clients = [threading.Thread(target=client, args=(channel, boot, number), daemon=True)
               for number in range(plan["clients"])]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    return 1  # every client was refused: the host sees why on the channel


if __name__ == "__main__":
    sys.exit(main())
