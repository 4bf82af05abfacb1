"""Three ``dropkit hq`` processes on one PostgreSQL ledger, in one ``--shared-group`` on a real
Mosquitto, each kit's messages dealt to all three; one is killed with SIGKILL mid-stream and
started again. Every sale is recorded once, each kit's chain is applied in order (each kit sells
its own SKU, of which central stock holds two fewer than it sells: exactly its last two sales
are refused), and the report has nothing else to say."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

from agent.ops.harness import Broker, Hq, query_ledger, wait_for, write_manifest
from tests.hq_helpers import fleet, postgres_database

KITS, SALES = 12, 30


def per_kit_sku(kit: int, seq: int) -> tuple[str, int]:
    return f"SKU-{kit:02}", 100


class Fleet:
    """The kits' publishing client and what HQ answered them."""

    def __init__(self, broker: Broker) -> None:
        self.answers: dict[tuple[str, str], set[str]] = {}
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._answer
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.max_inflight_messages_set(100)
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe("dropkit/+/acks", qos=1)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _answer(self, c: object, u: object, msg: mqtt.MQTTMessage) -> None:
        ack = json.loads(msg.payload)
        with self.lock:
            self.answers.setdefault((msg.topic.split("/")[1], ack["order_id"]), set()).add(
                ack["result"])

    def answered(self) -> int:
        with self.lock:
            return len(self.answers)

    def publish(self, kits: list[tuple[str, list[bytes]]], seqs: range) -> None:
        """Each kit's links ``seqs`` (1-based), kit by kit in turn, each kit's in order."""
        for seq in seqs:
            for kit_id, payloads in kits:
                self.client.publish(f"dropkit/{kit_id}/orders", payloads[seq - 1], qos=1)


def instance(broker: Broker, url: str, stock: Path, name: str) -> Hq:
    hq = Hq(broker, url, stock=stock)
    # A message ahead of a missing link waits longer than the test: every link must come.
    hq.extra_args = ["--shared-group", "hq", "--client-id", name, "--hold-s", "300"]
    return hq


def test_three_instances_on_one_postgresql_survive_a_kill_9(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    stock = write_manifest(tmp_path / "stock.toml",
                           [(f"SKU-{k:02}", "item", 100, SALES - 2) for k in range(KITS)])
    kits = fleet("kit", KITS, SALES, per_kit_sku)
    with postgres_database() as url:
        hqs = [instance(broker, url, stock, f"hq-{n}").start(wait=False) for n in range(3)]
        for hq in hqs:
            hq.wait_connected()
        sellers = Fleet(broker)
        sellers.publish(kits, range(1, 11))
        wait_for(lambda: sellers.answered() == KITS * 10, 60, "the first ten of each kit")
        # kill -9 one while the next ten of each kit flow.
        publishing = threading.Thread(target=sellers.publish, args=(kits, range(11, 21)))
        publishing.start()
        wait_for(lambda: sellers.answered() >= KITS * 10 + 30, 60, "selling again")
        hqs[1].kill()
        publishing.join()
        # Its share (dealt to its session while it is down) is taken by the first online one.
        wait_for(lambda: any("adopting the session of HQ instance hq-1" in line
                             for line in hqs[0].log), 30, "hq-1's session adopted")
        try:
            wait_for(lambda: sellers.answered() == KITS * 20, 60, "twenty of each kit")
        except AssertionError as exc:
            logs = ["".join(line for line in hq.log if " accepted " not in line)[-4000:]
                    for hq in hqs]
            raise AssertionError(f"{exc}: {sellers.answered()} answered\n" +
                                 "\n".join(logs)) from None
        hqs[1] = instance(broker, url, stock, "hq-1").start()
        sellers.publish(kits, range(21, SALES + 1))
        wait_for(lambda: sellers.answered() == KITS * SALES, 60, "every sale answered")

        applied = [sum(" order " in line and " accepted" in line for line in hq.log)
                   for hq in hqs]
        assert min(applied) > 0, applied  # all three took part, the restarted one too
        assert all(len(results) == 1 for results in sellers.answers.values())
        rows = query_ledger(url, "SELECT kit_id, seq, result FROM sales ORDER BY kit_id, seq")
        assert len(rows) == KITS * SALES
        for k, (kit_id, _) in enumerate(kits):
            results = [result for kit, _, result in rows if kit == kit_id]
            assert results == ["accepted"] * (SALES - 2) + ["rejected"] * 2, (k, results)
        assert query_ledger(url, "SELECT count(*), count(DISTINCT kit_id) FROM links") == [
            (KITS * SALES, KITS)]
        assert query_ledger(url, "SELECT count(*) FROM held") == [(0,)]
        assert query_ledger(url, "SELECT count(*) FROM faults") == [(0,)]
        report = subprocess.run([sys.executable, "-m", "agent", "hq", "report", "--db", url],
                                capture_output=True, text=True, timeout=60)
        lines = report.stdout.splitlines()
        assert lines[-1] == f"{KITS * 2} mismatch(es)", lines
        assert all(line.startswith("rejected: ") and "central stock has 0 left" in line
                   for line in lines[:-1]), lines
        logs = "".join(line for hq in hqs for line in hq.log)
        assert "Traceback" not in logs and "ignored garbage" not in logs, logs[-3000:]
        sellers.client.loop_stop()
        for hq in hqs:
            if hq.proc and hq.proc.poll() is None:
                assert hq.stop() == 0
    broker.stop()


CHAOS_KITS, CHAOS_SALES = 16, 100


def test_every_sale_answered_while_instances_are_killed_again_and_again(tmp_path: Path) -> None:
    """Three instances, each killed with SIGKILL and started again, again and again, while the
    kits sell (sometimes two or all three down at once; sessions adopted, taken back and adopted
    again), on a broker that sends HQ up to 1000 messages before an acknowledgement: a kit that
    never sends a sale twice still gets an answer for every one, each sale recorded once. A
    message acknowledged to the broker before it was recorded and its answer handed to the
    broker, on any session an instance drains, is lost here for good."""
    broker = Broker(tmp_path / "broker")
    broker.conf.write_text(broker.conf.read_text() + "max_inflight_messages 1000\n")
    broker.start()
    stock = write_manifest(tmp_path / "stock.toml",
                           [(f"SKU-{k:02}", "item", 100, 10_000) for k in range(CHAOS_KITS)])
    kits = fleet("kit", CHAOS_KITS, CHAOS_SALES, per_kit_sku)
    total = CHAOS_KITS * CHAOS_SALES
    with postgres_database() as url:
        hqs = [instance(broker, url, stock, f"hq-{n}").start(wait=False) for n in range(3)]
        for hq in hqs:
            hq.wait_connected()
        every_run = list(hqs)
        sellers = Fleet(broker)
        selling = threading.Event()
        selling.set()

        def sell() -> None:
            for first in range(1, CHAOS_SALES + 1, 5):  # bursts of five of each kit's
                sellers.publish(kits, range(first, first + 5))
                time.sleep(0.8)  # the pace of a drop, so that the kills land mid-stream
            selling.clear()

        def chaos(n: int) -> None:
            """Up 1.5 to 5 s, SIGKILL, down 0.5 to 4 s (adopted after 2 s), again."""
            pace = random.Random(n)
            while selling.is_set():
                time.sleep(pace.uniform(1.5, 5.0))
                hqs[n].kill()
                time.sleep(pace.uniform(0.5, 4.0))
                hqs[n] = instance(broker, url, stock, f"hq-{n}").start()
                every_run.append(hqs[n])

        threads = [threading.Thread(target=sell)] + [
            threading.Thread(target=chaos, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        kills = len(every_run) - 3
        adoptions = sum("adopting the session" in line for hq in every_run for line in hq.log)
        try:
            wait_for(lambda: sellers.answered() == total, 120, "every sale answered")
        except AssertionError as exc:
            with sellers.lock:
                answered = {order for _, order in sellers.answers}
            missing = [f"{kit_id}-order-{seq:04}" for kit_id, _ in kits
                       for seq in range(1, CHAOS_SALES + 1)
                       if f"{kit_id}-order-{seq:04}" not in answered]
            recorded = {order for (order,) in query_ledger(url, "SELECT order_id FROM sales")}
            raise AssertionError(
                f"{exc}: {sellers.answered()} of {total} answered through {kills} kills and "
                f"{adoptions} adoptions; unanswered {missing[:10]}, of which HQ recorded "
                f"{[order for order in missing if order in recorded][:10]}") from None
        assert all(results == {"accepted"} for results in sellers.answers.values())
        rows = query_ledger(url, "SELECT kit_id, count(*), count(DISTINCT seq), max(seq) "
                                 "FROM sales GROUP BY kit_id ORDER BY kit_id")
        assert rows == [(kit_id, CHAOS_SALES, CHAOS_SALES, CHAOS_SALES) for kit_id, _ in kits]
        assert query_ledger(url, "SELECT count(*) FROM held") == [(0,)]
        assert query_ledger(url, "SELECT count(*) FROM faults") == [(0,)]
        print(f"{total} sales answered through {kills} kills and {adoptions} adoptions")
        sellers.client.loop_stop()
        for hq in hqs:
            assert hq.stop() == 0
    broker.stop()
