"""Outbox drain rate through the kit's uplink, beside raw paho QoS 1 publishes.

Run: ``.venv/bin/python bench/uplink.py`` (``--orders N``; needs ``mosquitto`` on the PATH).

The agent's figure: ``dropkit sim`` starts with N sales waiting in its outbox (taken while the
broker was unreachable) and drains them to a broker started by this script, each marked relayed
in the store after its PUBACK. The baseline, in the same run against the same broker: one paho
client publishing N payloads of the same size with QoS 1 and the same in-flight window. Both are
clocked twice: by the PUBACKs alone (the agent's relayed stamps in its store; the raw client's
PUBACK callbacks), and by a QoS 1 subscriber on the broker, from the first message it sees to
the last (then the broker's delivery to the subscriber is part of both figures). The ratios
are what to watch. Also printed: the longest wait between two telemetry messages (published
every 0.2 s) while the orders drain.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import threading
import time
from datetime import datetime
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import Kit, new_order_id, write_manifest
from tests.mqtt_helpers import Broker, Listener, kit_config, wait_for

WINDOW = 32


def fill_outbox(kit: Kit, orders: int) -> int:
    """Sell ``orders`` orders over HTTP; returns the size of one orders message."""
    with kit.client() as client:
        for _ in range(orders):
            answer = client.post("/api/orders", headers=kit.staff, json={"order_id": new_order_id(),
                                                      "lines": [{"sku": "A-1", "qty": 1}]})
            assert answer.status_code == 201
    return len(json.dumps(answer.json())) + 120  # kit id, trace id, type, msg_id


def seen_rates(listener: Listener, count: int) -> tuple[float, float]:
    """Orders per second from the first of ``count`` seen by ``listener`` to the last, and
    the longest wait between two telemetry messages in that time."""
    orders_at, telemetry_at = [], []
    while len(orders_at) < count:
        topic, _payload, _retained, at = listener.next("", timeout=30)
        (telemetry_at if topic.endswith("/telemetry/power") else orders_at).append(at)
    during = [at for at in telemetry_at if orders_at[0] <= at <= orders_at[-1]]
    edges = [orders_at[0], *during, orders_at[-1]]
    return (count - 1) / (orders_at[-1] - orders_at[0]), max(b - a for a, b in pairwise(edges))


def relayed_rate(state_dir: Path) -> float:
    """Orders per second by the store's relayed stamps (each set after the broker's PUBACK)."""
    db = sqlite3.connect(state_dir / "dropkit.db")
    try:
        count, first, last = db.execute("SELECT count(*), min(relayed_at), max(relayed_at) "
                                        "FROM outbox WHERE kind = 'sale'").fetchone()
    finally:
        db.close()
    took = datetime.fromisoformat(last) - datetime.fromisoformat(first)
    return (count - 1) / took.total_seconds()


def raw_publish_rate(broker: Broker, count: int, size: int, listen: bool) -> float:
    """Raw paho at QoS 1: by a subscriber's clock when ``listen``, else by the PUBACKs."""
    import paho.mqtt.client as mqtt

    listener = Listener(broker, "bench/raw/#") if listen else None
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    done = threading.Event()
    acked_at: list[float] = []

    def published(*_args) -> None:
        acked_at.append(time.perf_counter())
        if len(acked_at) == count:
            done.set()

    client.on_publish = published
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    payload = b"x" * size
    for n in range(count):
        client.publish(f"bench/raw/{n % 10}", payload, qos=1)
    rate = seen_rates(listener, count)[0] if listener else 0.0
    assert done.wait(300), "the broker did not acknowledge every raw publish"
    client.loop_stop()
    client.disconnect()
    if listener is None:
        return (count - 1) / (acked_at[-1] - acked_at[0])
    listener.close()
    return rate


def drain(tmp_path: Path, broker: Broker, manifest: Path, orders: int,
          listen: bool) -> tuple[float, float, int]:
    """Fill a kit's outbox with the broker away, then drain it: (rate, telemetry gap, size)."""
    state = tmp_path / f"state-{'seen' if listen else 'acked'}"
    nowhere = kit_config(tmp_path / "off.toml", broker, manifest, url="mqtt://127.0.0.1:1")
    kit = Kit(state, nowhere).start()
    size = fill_outbox(kit, orders)
    kit.stop()
    listener = Listener(broker, "dropkit/+/orders", "dropkit/+/telemetry/power") if listen \
        else None
    # The printer is a device of its own; the simulated one would render every receipt
    # inside the agent's process while it drains.
    live = kit_config(tmp_path / "on.toml", broker, manifest,
                      sections={"printer": {"enabled": False}}, inflight_window=WINDOW,
                      resend_after_s=3600.0, reconcile_check_s=30.0, telemetry_interval_s=0.2)
    kit = Kit(state, live).start()
    try:
        rate, gap = seen_rates(listener, orders) if listener else (0.0, 0.0)
        with kit.client() as client:
            wait_for(lambda: client.get("/api/health").json()["queue_depth"] == 0, 120,
                     "outbox marked relayed")
        kit.stop()
    finally:
        kit.kill()
        if listener is not None:
            listener.close()
    return (rate if listen else relayed_rate(state)), gap, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=10000)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dropkit-bench-") as tmp:
        tmp_path = Path(tmp)
        broker = Broker(tmp_path / "broker").start()
        manifest = write_manifest(tmp_path / "m.toml", [("A-1", "Item A", 100, 1_000_000)])
        try:
            for listen, measured in ((False, "PUBACKs"), (True, "a subscriber")):
                agent_rate, gap, size = drain(tmp_path, broker, manifest, args.orders, listen)
                raw_rate = raw_publish_rate(broker, args.orders, size, listen)
                rows.append((measured, agent_rate, raw_rate, gap))
        finally:
            broker.stop()
    print(f"{args.orders} messages of about {size} bytes, QoS 1, in-flight window {WINDOW}")
    print(f"{'clocked by':<14} {'agent/s':>9} {'raw/s':>9} {'ratio':>6}")
    for measured, agent_rate, raw_rate, _gap in rows:
        print(f"{measured:<14} {agent_rate:>9.0f} {raw_rate:>9.0f} {agent_rate / raw_rate:>6.2f}")
    print(f"longest wait between telemetry messages during the drain: {rows[-1][3]:.3f} s "
          "(interval 0.2 s)")


if __name__ == "__main__":
    main()
