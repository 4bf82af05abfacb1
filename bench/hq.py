"""HQ's acks per second for a fleet, beside a raw responder, through a real Mosquitto.

Run: ``.venv/bin/python bench/hq.py`` (``--kits 1000 --sales 10``; ``--ledgers sqlite,postgresql``,
``--instances 1,3``; needs ``mosquitto``, and PostgreSQL on 127.0.0.1:5432 for its ledger).

A fleet of simulated kits: each kit's sales are real receipt links (hashed over the one before,
as agent/core/receipts.py makes them, in the payload the kit's uplink publishes), published in
chain order per kit by a few paho clients at once. For each ledger and number of instances, on a
broker of its own started here:

- the raw responder: paho clients (as many processes of their own as HQ has instances, in a
  shared subscription of their own when more than one) that answer every sale with an
  ``accepted`` ack and keep no ledger;
- ``dropkit hq`` (one, or several in one ``--shared-group``) on a new ledger with central stock
  loaded, so every sale is checked, its link verified and recorded.

Each figure is the fleet's sales divided by the time from the first publish (with ``--live``)
or from the consumers going on (a backlog: they are paused while it is published) to the last
ack (each sale's ack counted once). The ratio HQ / raw is what to watch: beside several instances,
raw responders as many (and one raw responder, the figure the issue asked for), since on a
machine of few CPUs shared with other work one process's share of it can be the ceiling.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.ops.harness import Broker, Hq, query_ledger, write_manifest
from tests.hq_helpers import fleet, postgres_database

SKUS = [("A-1", 250), ("B-2", 400), ("C-3", 1200), ("D-4", 90)]
PUBLISHERS = 4


def rotating(kit: int, seq: int) -> tuple[str, int]:
    return SKUS[(kit + seq) % len(SKUS)]


def respond(port: int, name: str, group: bool) -> None:
    """A raw responder (``--respond PORT``): an ack for every sale, no ledger; a persistent
    session like HQ's, so the broker keeps a backlog for it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name,
                         protocol=mqtt.MQTTv5)

    def message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        data = json.loads(msg.payload)
        kit_id = msg.topic.split("/")[-2]
        c.publish(f"dropkit/{kit_id}/acks", json.dumps({
            "order_id": data["order_id"], "result": "accepted", "reason": "",
            "trace_id": data.get("trace_id", "")}), qos=1)

    client.on_message = message
    client.on_subscribe = lambda *a: print("raw responder subscribed", flush=True)
    topic = f"{'$share/raw/' if group else ''}dropkit/+/orders"
    client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = 3600
    properties.ReceiveMaximum = 1000
    client.connect("127.0.0.1", port, clean_start=False, properties=properties)
    client.loop_forever()


class AckCounter:
    """Every sale's ack, once each, with the times of the first and the last."""

    def __init__(self, broker: Broker, total: int) -> None:
        import paho.mqtt.client as mqtt

        self.total, self.acked = total, set()
        self.first = self.last = 0.0
        self.done, subscribed = threading.Event(), threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._ack
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("dropkit/+/acks", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _ack(self, c: object, u: object, msg: Any) -> None:
        self.acked.add((msg.topic, json.loads(msg.payload)["order_id"]))
        self.last = time.perf_counter()
        self.first = self.first or self.last
        if len(self.acked) >= self.total:
            self.done.set()

    def rate(self, since: float, timeout: float) -> float:
        """Acks per second from ``since`` (or the first ack, when 0) to the last."""
        finished = self.done.wait(timeout)
        self.client.loop_stop()
        self.client.disconnect()
        if not finished:
            raise RuntimeError(f"only {len(self.acked)} of {self.total} acks in {timeout:.0f} s")
        start = since or self.first
        return (self.total - (0 if since else 1)) / (self.last - start)


def publish(broker: Broker, kits: list[tuple[str, list[bytes]]]) -> float:
    """Publish the fleet's sales (each kit's in chain order, a few clients at once) and wait
    for the broker to have them all; returns when the publishing began."""
    import paho.mqtt.client as mqtt

    clients = []
    for _ in range(PUBLISHERS):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(0)
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        clients.append(client)

    def send(client: mqtt.Client, share: list[tuple[str, list[bytes]]]) -> None:
        infos = [client.publish(f"dropkit/{kit_id}/orders", payload, qos=1)
                 for kit_id, payloads in share for payload in payloads]
        for info in infos:
            info.wait_for_publish(120)

    start = time.perf_counter()
    threads = [threading.Thread(target=send, args=(client, kits[i::PUBLISHERS]))
               for i, client in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for client in clients:
        client.loop_stop()
        client.disconnect()
    return start


def measure(broker: Broker, kits: list[tuple[str, list[bytes]]], start: Callable[[], object],
            pids: Callable[[], list[int]], live: bool, timeout: float) -> float:
    """Acks per second of the consumers that ``start`` starts (their processes ``pids``): live,
    from the first publish to the last ack while they run; else a backlog the broker kept for
    them while they were paused (SIGSTOP, connected and subscribed: each instance up and knowing
    the others, so neither their start nor their finding each other is measured), from when
    they go on (SIGCONT) to the last ack."""
    counter = AckCounter(broker, sum(len(payloads) for _, payloads in kits))
    start()
    if live:
        return counter.rate(publish(broker, kits), timeout)
    for pid in pids():
        os.kill(pid, signal.SIGSTOP)
    publish(broker, kits)
    began = time.perf_counter()
    for pid in pids():
        os.kill(pid, signal.SIGCONT)
    return counter.rate(began, timeout)


def wait_online(broker: Broker, topics: list[str], timeout: float = 30) -> None:
    """Until each of HQ's status topics says ``online`` (its instances say it once subscribed,
    and hear each other's at the same time)."""
    import paho.mqtt.client as mqtt

    said: dict[str, bytes] = {}
    online = threading.Event()

    def heard(c: object, u: object, msg: Any) -> None:
        said[msg.topic] = msg.payload
        if all(said.get(topic) == b"online" for topic in topics):
            online.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.on_message = heard
    client.connect("127.0.0.1", broker.port)
    client.subscribe("dropkit/hq/#", qos=1)
    client.loop_start()
    try:
        if not online.wait(timeout):
            raise RuntimeError(f"HQ's instances did not all say online: {said}")
    finally:
        client.loop_stop()
        client.disconnect()


def bench_broker(workdir: Path) -> Broker:
    broker = Broker(workdir)
    # Mosquitto's default window (20 unacknowledged messages per client) would cap a batch.
    broker.conf.write_text(broker.conf.read_text() + "max_inflight_messages 1000\n")
    return broker.start()


def raw_rate(workdir: Path, instances: int, kits: list[tuple[str, list[bytes]]], live: bool,
             timeout: float) -> float:
    broker = bench_broker(workdir)
    responders: list[subprocess.Popen[str]] = []

    def start() -> None:
        responders.clear()
        for n in range(instances):  # all at once, as HQ's instances are started
            responders.append(subprocess.Popen(
                [sys.executable, __file__, "--respond", str(broker.port), "--name",
                 f"raw-{n}"] + ["--group"] * (instances > 1), stdout=subprocess.PIPE, text=True))
        for responder in responders:
            assert responder.stdout is not None and "subscribed" in responder.stdout.readline()

    def stop() -> None:
        for responder in responders:
            responder.kill()
            responder.wait()

    try:
        return measure(broker, kits, start, lambda: [r.pid for r in responders], live, timeout)
    finally:
        stop()
        broker.stop()


@contextlib.contextmanager
def ledger(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield str(workdir / "hq.db")
    else:
        with postgres_database() as url:
            yield url


def hq_rate(workdir: Path, kind: str, instances: int, kits: list[tuple[str, list[bytes]]],
            live: bool, timeout: float) -> tuple[float, str]:
    broker = bench_broker(workdir)
    stock = write_manifest(workdir / "stock.toml",
                           [(sku, sku, price, 1_000_000) for sku, price in SKUS])
    with ledger(kind, workdir) as target:
        hqs: list[Hq] = []

        def start() -> None:
            hqs.clear()
            for n in range(instances):
                hq = Hq(broker, target, stock=stock)
                if instances > 1:
                    hq.extra_args = ["--shared-group", "bench", "--client-id", f"hq-{n}"]
                hqs.append(hq)
            for hq in hqs:  # all at once: none adopts another's session for long
                hq.start(wait=False)
            for hq in hqs:
                hq.wait_connected()
            wait_online(broker, [f"dropkit/hq/bench/hq-{n}" for n in range(instances)]
                        if instances > 1 else ["dropkit/hq/dropkit-hq"])

        def stop() -> None:
            for hq in hqs:
                hq.stop()

        try:
            rate = measure(broker, kits, start, lambda: [hq.proc.pid for hq in hqs if hq.proc],
                           live, timeout)
            recorded = query_ledger(target, "SELECT count(*) FROM sales WHERE result = "
                                            "'accepted'")[0][0]
            assert recorded == sum(len(p) for _, p in kits), recorded
        finally:
            stop()
        batches = [line.split("(")[-1].rstrip(")\n") for hq in hqs for line in hq.log
                   if "HQ stopped" in line]
        broker.stop()
    return rate, "; ".join(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kits", type=int, default=1000)
    parser.add_argument("--sales", type=int, default=10)
    parser.add_argument("--ledgers", default="sqlite,postgresql")
    parser.add_argument("--instances", default="1,3")
    parser.add_argument("--live", action="store_true",
                        help="publish while HQ runs (the publishers' pace is then part of the "
                             "figures) instead of a backlog kept by the broker")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--respond", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--group", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.respond:
        respond(args.respond, args.name, args.group)
        return
    print(f"fleet: {args.kits} kits x {args.sales} sales, "
          f"{'live' if args.live else 'a backlog'}, {os.cpu_count()} CPUs")
    for kind in args.ledgers.split(","):
        for instances in [int(n) for n in args.instances.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                raws = [raw_rate(work / f"raw{n}", n, fleet("raw", args.kits, args.sales,
                                                            rotating), args.live, args.timeout)
                        for n in sorted({instances, 1})]
                rate, batches = hq_rate(work / "hq", kind, instances,
                                        fleet("kit", args.kits, args.sales, rotating), args.live,
                                        args.timeout)
                one = f"; one raw responder {raws[0]:.0f}, ratio {rate / raws[0]:.2f}" \
                    if instances > 1 else ""
                print(f"{kind:10} x{instances}: HQ {rate:7.0f} acks/s  raw responder "
                      f"x{instances} {raws[-1]:7.0f} acks/s  ratio {rate / raws[-1]:.2f}{one}  "
                      f"({batches})", flush=True)


if __name__ == "__main__":
    main()
