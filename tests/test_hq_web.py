"""HQ's receipt pages and ``/metrics`` over real HTTP, on both ledgers: a real ``dropkit hq``
with ``--http-port`` on a real Mosquitto, fed the messages a real kit store publishes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt

from agent.core.orders import refund_order, settle_payment, void_order
from agent.ops.harness import Broker, Hq, free_port, wait_for
from tests.core.sales_helpers import KIT, at, open_db, sell
from tests.hq_helpers import kit_messages


def publish(broker: Broker, messages: list[dict]) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    for message in messages:
        client.publish(f"dropkit/{KIT}/orders", json.dumps(message), qos=1).wait_for_publish(10)
    client.loop_stop()
    client.disconnect()


def test_receipt_pages_and_metrics(tmp_path: Path, hq_ledger: str) -> None:
    broker = Broker(tmp_path / "broker").start()
    port = free_port()
    hq = Hq(broker, hq_ledger)
    hq.extra_args = ["--http-port", str(port)]
    hq.start()
    wait_for(lambda: any("serves receipts" in line for line in hq.log), 15, "HQ serving HTTP")
    db = open_db(tmp_path / "kit.db")
    sell(db, "order-sold", 1)
    sell(db, "order-card", 2, method="card")
    settle_payment(db, "order-card", False, at(3))
    void_order(db, "order-card", "declined", KIT, at(4))
    sell(db, "order-back", 5)
    refund_order(db, "order-back", False, "changed their mind", KIT, at(6))
    messages = kit_messages(db)
    publish(broker, messages[:-1])  # the refund comes later
    web = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def page(message: dict, **params: str) -> httpx.Response:
        receipt = message["receipt"]
        return web.get(f"/r/{KIT}/{receipt['seq']}/{receipt['hash']}", params=params)

    sold, card, void, back = messages[0], messages[1], messages[2], messages[3]
    wait_for(lambda: page(back).status_code == 200, 15, "the last sale recorded")
    answer = page(sold)
    assert answer.headers["content-type"].startswith("text/html")
    assert "Receipt recorded" in answer.text and "<td>sold</td>" in answer.text
    assert "<td>8.00</td>" in answer.text and at(1) in answer.text
    assert page(card, format="json").json() == {
        "recorded": True, "kit": KIT, "seq": 2, "hash": card["receipt"]["hash"], "link": "sale",
        "order_id": "order-card", "sold_at": at(2), "total_cents": 800, "state": "voided",
        "chain": "checked"}
    assert page(void, format="json").json()["state"] == "voided"
    assert page(back, format="json").json()["state"] == "sold"  # its refund is not in yet
    publish(broker, messages[-1:])
    wait_for(lambda: page(back, format="json").json()["state"] == "refunded", 15, "refunded")

    # Unknown receipts: 404 with a page that says so, never a 5xx.
    other = "f" * 64
    for path in [f"/r/{KIT}/1/{other}", f"/r/kit-nobody/1/{sold['receipt']['hash']}",
                 f"/r/{KIT}/99/{other}", f"/r/{KIT}/1/not-a-hash", f"/r/{KIT}/-1/{other}",
                 f"/r/{KIT}/one/{other}", f"/r/{KIT}/{2**70}/{other}", f"/r/{'k' * 300}/1/x",
                 "/r/", "/nothing", "/r/%00/1/%ff"]:
        answer = web.get(path)
        assert answer.status_code == 404, (path, answer.status_code, answer.text)
    unknown = web.get(f"/r/{KIT}/1/{other}")
    assert "Receipt not recorded" in unknown.text
    assert web.get(f"/r/{KIT}/1/{other}", params={"format": "json"}).json() == {
        "recorded": False, "kit": KIT, "seq": 1}
    assert web.post(f"/r/{KIT}/1/{other}").status_code == 404

    # /metrics: the Prometheus text format, this instance's counters and the ledger's gauges.
    text = web.get("/metrics")
    assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = dict(line.rsplit(" ", 1) for line in text.text.splitlines()
                   if line and not line.startswith("#"))
    assert samples["dropkit_hq_messages_total"] == str(len(messages))
    assert samples["dropkit_hq_acks_total"] == "3"
    assert samples["dropkit_hq_ledger_up"] == "1"
    assert float(samples[f'dropkit_hq_kit_lag_seconds{{kit="{KIT}"}}']) > 0
    assert all(line.startswith(("# HELP dropkit_hq_", "# TYPE dropkit_hq_", "dropkit_hq_"))
               for line in text.text.splitlines())

    # The bounded protocol: a head that never ends is refused, not held.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Long: " + b"a" * 70_000)
        assert sock.recv(200).startswith(b"HTTP/1.1 431")
    web.close()
    assert hq.stop() == 0
    broker.stop()
