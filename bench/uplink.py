"""Outbox drain rate through the kit's uplink, beside raw paho QoS 1 publishes.

Run: ``.venv/bin/python bench/uplink.py`` (``--orders N``; needs ``mosquitto`` on the PATH).

The agent's figure: ``dropkit sim`` starts with N sales waiting in its outbox (taken while the
broker was unreachable) and drains them to a broker started by this script: messages per
second from the first order seen on the broker to the last, each marked relayed in the store
after its PUBACK. The baseline, measured in the same run against the same broker: one paho
client publishing N payloads of the same size with QoS 1 and the same in-flight window,
waiting for every PUBACK. The ratio is what to watch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import Kit, new_order_id, write_manifest
from tests.mqtt_helpers import Broker, Listener, kit_config, wait_for

WINDOW = 32


def fill_outbox(kit: Kit, orders: int) -> int:
    """Sell ``orders`` orders over HTTP; returns the size of one orders message."""
    with kit.client() as client:
        for _ in range(orders):
            answer = client.post("/api/orders", json={"order_id": new_order_id(),
                                                      "lines": [{"sku": "A-1", "qty": 1}]})
            assert answer.status_code == 201
    return len(json.dumps(answer.json())) + 120  # kit id, trace id, type, msg_id


def raw_publish_rate(broker: Broker, count: int, size: int) -> float:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    done = threading.Event()
    acked = 0

    def published(*_args) -> None:
        nonlocal acked
        acked += 1
        if acked == count:
            done.set()

    client.on_publish = published
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    payload = b"x" * size
    start = time.perf_counter()
    for n in range(count):
        client.publish(f"bench/raw/{n % 10}", payload, qos=1)
    done.wait(300)
    rate = count / (time.perf_counter() - start)
    client.loop_stop()
    client.disconnect()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dropkit-bench-") as tmp:
        tmp_path = Path(tmp)
        broker = Broker(tmp_path / "broker")
        manifest = write_manifest(tmp_path / "m.toml", [("A-1", "Item A", 100, 1_000_000)])
        nowhere = kit_config(tmp_path / "off.toml", broker, manifest, url="mqtt://127.0.0.1:1")
        kit = Kit(tmp_path / "state", nowhere).start()
        size = fill_outbox(kit, args.orders)
        kit.stop()
        broker.start()
        try:
            listener = Listener(broker, "dropkit/+/orders")
            live = kit_config(tmp_path / "on.toml", broker, manifest, inflight_window=WINDOW,
                              resend_after_s=3600.0, reconcile_check_s=30.0)
            # The printer is a device of its own; the simulated one would render every
            # receipt inside the agent's process while it drains.
            live.write_text(live.read_text() + "[printer]\nenabled = false\n")
            kit = Kit(tmp_path / "state", live).start()
            first = listener.next("/orders", timeout=30)[3]
            seen = 1
            last = first
            while seen < args.orders:
                last = listener.next("/orders", timeout=30)[3]
                seen += 1
            agent_rate = (args.orders - 1) / (last - first)
            with kit.client() as client:
                wait_for(lambda: client.get("/api/health").json()["queue_depth"] == 0, 60,
                         "outbox marked relayed")
            kit.stop()
            listener.close()
            raw_rate = raw_publish_rate(broker, args.orders, size)
        finally:
            kit.kill()
            broker.stop()
    print(f"{'messages':>8} {'agent/s':>9} {'raw/s':>9} {'ratio':>6}")
    print(f"{args.orders:>8} {agent_rate:>9.0f} {raw_rate:>9.0f} {agent_rate / raw_rate:>6.2f}")
    print(f"(payload about {size} bytes, QoS 1, in-flight window {WINDOW})")


if __name__ == "__main__":
    main()
