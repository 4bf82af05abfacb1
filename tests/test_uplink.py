"""The uplink against a real Mosquitto the tests start, kill and restart, and a real HQ."""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import json
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import new_order_id, write_manifest
from tests.mqtt_helpers import Broker, Hq, Listener, kit_config, wait_for


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return write_manifest(tmp_path / "stock.toml", [("A-1", "Item A", 250, 1_000_000),
                                                    ("B-2", "Item B", 100, 1_000_000)])


def place(kit, client: httpx.Client, n: int, **headers: str) -> list[str]:
    ids = []
    for i in range(n):
        order_id = new_order_id()
        answer = client.post("/api/orders", headers={**kit.staff, **headers}, json={
            "order_id": order_id, "lines": [{"sku": "A-1" if i % 2 else "B-2", "qty": 1}]})
        assert answer.status_code == 201, answer.text
        ids.append(order_id)
    return ids


def health(kit) -> dict:
    return httpx.get(kit.url + "/api/health", timeout=10).json()


def test_broker_down_while_500_orders_are_taken(kit_factory, tmp_path, manifest) -> None:
    broker = Broker(tmp_path / "broker", persistence=True).start()
    hq = Hq(broker, tmp_path / "hq.db").start()
    broker.stop()
    config = kit_config(tmp_path / "agent.toml", broker, manifest, ack_window_s=3)
    kit = kit_factory(tmp_path / "state", config)
    with kit.client() as client:
        ids = place(kit, client, 500)
        assert {client.get(f"/api/orders/{i}").json()["status"] for i in ids} == {"queued"}
    state = health(kit)
    assert state["mode"] == "offline" and "uplink_unhealthy" in state["mode_reasons"]
    assert state["queue_depth"] >= 500
    broker.start()
    wait_for(lambda: hq.query("SELECT count(*) FROM sales")[0][0] == 500, 60, "500 at HQ")
    wait_for(lambda: health(kit)["queue_depth"] == 0, 30, "queue drained")
    # Exactly once, and in the order they were sold.
    sales = hq.query("SELECT order_id, seq FROM sales ORDER BY rowid")
    arrived = [order_id for order_id, _ in sales]
    assert len(arrived) == len(ids)
    first_wrong = next((n for n, (a, b) in enumerate(zip(arrived, ids, strict=True)) if a != b),
                       None)
    assert first_wrong is None, (
        f"out of order at receipt #{first_wrong + 1}: HQ got "
        f"{[seq for _, seq in sales][max(first_wrong - 2, 0):first_wrong + 5]}"
        "\nHQ connections:\n" + "".join(line for line in hq.log if "connected" in line)
        + "kit uplink:\n" + "".join(line for line in kit.log if "uplink" in line))
    assert [seq for _, seq in sales] == list(range(1, 501))
    with kit.client() as client:
        wait_for(lambda: {client.get(f"/api/orders/{i}").json()["status"] for i in ids}
                 == {"reconciled"}, 30, "all reconciled")
    # The backlog's slow acks age out of the window: online again.
    wait_for(lambda: health(kit)["mode"] == "online", 10, "online once HQ answers")
    hq.stop()
    broker.stop()


def test_broker_and_agent_killed_mid_drain_of_5000(kit_factory, tmp_path, manifest) -> None:
    broker = Broker(tmp_path / "broker", persistence=True).start()
    hq = Hq(broker, tmp_path / "hq.db").start()
    broker.stop()
    config = kit_config(tmp_path / "agent.toml", broker, manifest, resend_after_s=20.0)
    state_dir = tmp_path / "state"
    kit = kit_factory(state_dir, config)
    with kit.client() as client:
        ids = place(kit, client, 5000)

    def at_hq() -> int:
        return hq.query("SELECT count(*) FROM sales")[0][0]

    broker.start()
    wait_for(lambda: at_hq() >= 1000, 60, "draining")
    broker.kill()  # in-flight messages and whatever the broker held in memory are gone
    broker.start()
    wait_for(lambda: at_hq() >= 2500, 60, "draining again")
    kit.kill()
    kit = kit_factory(state_dir, config)
    wait_for(lambda: at_hq() == 5000, 120, "all 5000 at HQ")
    try:
        wait_for(lambda: health(kit)["queue_depth"] == 0, 60, "queue drained")
    except AssertionError as timeout:
        with contextlib.closing(kit.open_store()) as db:
            stuck = [tuple(row) for row in db.execute(
                "SELECT id, kind, key FROM outbox WHERE relayed_at IS NULL ORDER BY id LIMIT 20")]
        raise AssertionError(f"{timeout}\nhealth: {health(kit)}\nnot relayed: {stuck}\n"
                             f"kit log:\n{''.join(kit.log[-40:])}") from None
    rows = hq.query("SELECT order_id, count(*) FROM sales GROUP BY order_id")
    assert len(rows) == 5000 and {n for _, n in rows} == {1}
    assert {order_id for order_id, _ in rows} == set(ids)
    links = hq.query("SELECT count(*), count(DISTINCT seq), max(seq) FROM links")[0]
    assert links == (5000, 5000, 5000)
    db = sqlite3.connect(state_dir / "dropkit.db")
    wait_for(lambda: db.execute("SELECT count(*) FROM orders WHERE status = 'reconciled'")
             .fetchone()[0] == 5000, 60, "all reconciled at the kit")
    duplicates = hq.query("SELECT value FROM counters WHERE name = 'duplicates'")
    print(f"HQ dropped {duplicates[0][0] if duplicates else 0} repeated messages")
    hq.stop()
    broker.stop()


def test_kill_9_turns_status_offline_and_restart_online(kit_factory, tmp_path,
                                                       manifest) -> None:
    broker = Broker(tmp_path / "broker").start()
    config = kit_config(tmp_path / "agent.toml", broker, manifest, keepalive_s=5)
    kit = kit_factory(tmp_path / "state", config)
    listener = Listener(broker, "dropkit/kit-test/status")
    assert listener.next("status")[1] == b"online"
    kit.kill()
    # The broker sends the last will once it notices the dead connection (at once: the kernel
    # closes the socket of a killed process).
    assert listener.next("status", timeout=15)[1] == b"offline"
    late = Listener(broker, "dropkit/kit-test/status")
    assert late.next("status")[1:3] == (b"offline", True), "the will is retained"
    late.close()
    kit = kit_factory(tmp_path / "state", config)
    assert listener.next("status")[1] == b"online"
    assert kit.stop() == 0
    assert listener.next("status")[1] == b"offline"
    listener.close()
    late = Listener(broker, "dropkit/kit-test/status")
    assert late.next("status")[1:3] == (b"offline", True)
    late.close()
    broker.stop()


def test_telemetry_keeps_flowing_while_10000_orders_drain(kit_factory, tmp_path,
                                                         manifest) -> None:
    broker = Broker(tmp_path / "broker").start()
    config = kit_config(tmp_path / "agent.toml", broker, manifest, telemetry_interval_s=0.2,
                        url="mqtt://127.0.0.1:1")  # nowhere: orders pile up first
    state_dir = tmp_path / "state"
    kit = kit_factory(state_dir, config)
    # Fill the outbox fast: 16 clients in parallel over HTTP.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda _: place(kit, kit.client(), 625), range(16)))
    assert health(kit)["queue_depth"] >= 10000
    kit.stop()
    listener = Listener(broker, "dropkit/kit-test/#")
    kit = kit_factory(state_dir, kit_config(tmp_path / "agent.toml", broker, manifest,
                                            telemetry_interval_s=0.2))
    telemetry_at, orders_seen = [], 0
    deadline = time.monotonic() + 120
    while orders_seen < 10000 and time.monotonic() < deadline:
        topic, _, _, at = listener.next("", timeout=10)
        if topic.endswith("/telemetry/power"):
            telemetry_at.append(at)
        elif topic.endswith("/orders"):
            orders_seen += 1
    assert orders_seen == 10000
    gaps = [b - a for a, b in itertools.pairwise(telemetry_at)]
    print(f"{len(telemetry_at)} telemetry messages during the drain; largest gap "
          f"{max(gaps):.3f} s")
    assert len(telemetry_at) >= 3 and max(gaps) < 1.0
    listener.close()
    broker.stop()


def test_acks_settle_orders_and_garbage_is_ignored(kit_factory, tmp_path, manifest) -> None:
    broker = Broker(tmp_path / "broker").start()
    central = write_manifest(tmp_path / "central.toml", [("A-1", "Item A", 250, 2)])
    hq = Hq(broker, tmp_path / "hq.db", stock=central).start()
    config = kit_config(tmp_path / "agent.toml", broker, manifest, ack_wait_s=2.0)
    kit = kit_factory(tmp_path / "state", config)
    listener = Listener(broker, "dropkit/kit-test/events")
    wait_for(lambda: health(kit)["mode"] == "online", 10, "online")
    with kit.client() as client:
        # Online, the answer waits for HQ: the sale is confirmed centrally.
        first = client.post("/api/orders", headers={**kit.staff,
                                                     "X-Trace-Id": "trace-from-the-stall"},
                            json={"order_id": new_order_id(),
                                  "lines": [{"sku": "A-1", "qty": 2}]})
        assert first.status_code == 201 and first.json()["status"] == "reconciled"
        # Central stock is gone (2 sold): HQ rejects; the kit shows it and tells ops.
        second = client.post("/api/orders", headers=kit.staff, json={"order_id": new_order_id(),
                                                  "lines": [{"sku": "A-1", "qty": 1}]})
        assert second.json()["status"] == "rejected"
        event = listener.json("events")
        while event["event"]["type"] != "order_rejected":
            event = listener.json("events")
        assert event["event"]["order_id"] == second.json()["order_id"]
        assert "central stock has 0 left" in event["event"]["reason"]
        # Garbage on the acks topic: logged, counted, nothing changes.
        garbage = Listener(broker, "unused/#")
        for payload in (b"\xff\xfe", b"[]", b'{"order_id": 5}', b'{"order_id": "x"}',
                        json.dumps({"order_id": second.json()["order_id"],
                                    "result": "maybe"}).encode()):
            garbage.client.publish("dropkit/kit-test/acks", payload, qos=1)
        wait_for(lambda: health(kit)["uplink"]["garbage_acks"] == 5, 10, "garbage counted")
        assert client.get(f"/api/orders/{second.json()['order_id']}").json()["status"] == \
            "rejected"
        garbage.close()
    # One trace id follows the request from the stall to HQ's log and back.
    assert any("trace trace-from-the-stall" in line for line in hq.log)
    assert sum("trace trace-from-the-stall" in line for line in kit.log) >= 2
    listener.close()
    hq.stop()
    broker.stop()


def test_unsettled_sales_raise_a_mismatch_then_refund_due(kit_factory, tmp_path,
                                                          manifest) -> None:
    broker = Broker(tmp_path / "broker").start()  # no HQ: nobody will ever ack
    config = kit_config(tmp_path / "agent.toml", broker, manifest, mismatch_after_s=0.5,
                        refund_after_s=1.5, reconcile_check_s=0.2)
    kit = kit_factory(tmp_path / "state", config)
    listener = Listener(broker, "dropkit/kit-test/events")
    with kit.client() as client:
        [order_id] = place(kit, client, 1)
        kinds = set()
        while "refund_due" not in kinds:
            event = listener.json("events")["event"]
            if event.get("order_id") == order_id:
                kinds.add(event["type"])
        assert kinds == {"mismatch", "refund_due"}
        assert client.get(f"/api/orders/{order_id}").json()["status"] == "refund_due"
        refunded = client.post(f"/api/staff/orders/{order_id}/refund", headers=kit.staff)
        assert refunded.json()["status"] == "refunded"
    listener.close()
    broker.stop()
