"""What the broker sends the kit is bounded: a real Mosquitto, a ``dropkit sim`` subprocess, and
acks that are too big or not acks at all. They are dropped and counted, the kit goes on
answering, and a good ack after them still settles its sale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.uplink.fromhq import MAX_ACK_BYTES
from agent.uplink.session import MAX_PACKET_BYTES
from tests.conftest import new_order_id, write_manifest
from tests.mqtt_helpers import Broker, Listener, kit_config, wait_for


def sell_one(kit) -> str:
    with kit.client() as client:
        order_id = new_order_id()
        assert kit.order(client, [{"sku": "A-1", "qty": 1}], order_id).status_code == 201
    return order_id


def status(kit, order_id: str) -> str:
    return kit.request("GET", f"/api/orders/{order_id}").data["status"]


def ack(order_id: str) -> bytes:
    return json.dumps({"order_id": order_id, "result": "accepted"}).encode()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_oversized_and_malformed_acks_are_dropped_and_counted(kit_factory, tmp_path: Path,
                                                              protocol: str) -> None:
    broker = Broker(tmp_path / "broker").start()  # no HQ: the test is HQ
    manifest = write_manifest(tmp_path / "stock.toml", [("A-1", "Item A", 250, 100)])
    kit = kit_factory(tmp_path / "state", kit_config(
        tmp_path / "agent.toml", broker, manifest, protocol=protocol))
    wait_for(lambda: kit.health()["uplink"]["state"] == "connected", 10, "connected")
    hq = Listener(broker, "unused/#")
    acks = "dropkit/kit-test/acks"

    # Within the packet bound but over an ack's: dropped before it is parsed, counted.
    first = sell_one(kit)
    hq.client.publish(acks, b"[" * (MAX_ACK_BYTES + 1), qos=1)
    hq.client.publish(acks, b'{"order_id": 5}', qos=1)
    wait_for(lambda: kit.health()["uplink"]["garbage_acks"] == 2, 10, "two counted")
    hq.client.publish(acks, ack(first), qos=1)
    wait_for(lambda: status(kit, first) == "reconciled", 10, "a good ack settles")

    # Over the packet bound: MQTT 5's broker never sends it; under 3.1.1 the kit refuses it as
    # soon as it reads its length, drops the connection and comes back.
    second = sell_one(kit)
    hq.client.publish(acks, b"x" * (4 * MAX_PACKET_BYTES), qos=0)
    hq.client.publish(acks, ack(second), qos=1)
    wait_for(lambda: status(kit, second) == "reconciled", 15, "settled after the big one")
    refused = [line for line in kit.log if "sent a packet of" in line]
    if protocol == "5":
        assert kit.health()["uplink"]["garbage_acks"] == 2 and refused == []
    else:
        assert kit.health()["uplink"]["garbage_acks"] == 3
        assert len(refused) == 1 and f"at most {MAX_PACKET_BYTES}" in refused[0], "".join(kit.log)
    hq.close()
    broker.stop()
