"""What a kit does with HQ's retained messages, which the broker sends again at each of its
connections: a real Mosquitto, ``dropkit hq`` and a ``dropkit sim`` kit whose link to the broker
the test cuts (a proxy), so the kit connects again and again.

- The kit sends its unanswered sales again when HQ comes online (it may have relayed them to
  nobody), not at every ``online`` it hears: each HQ instance's is retained and comes at every
  subscription, and an instance joining while others are online is no reason either.
- A refused allocation is said in the kit's log once, not each time it comes again."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.hq.sql import CHAIN_LOCKS
from agent.ops.harness import Broker, Hq, SimKit, wait_for, write_config, write_manifest
from tests.hq_helpers import holding, postgres_database
from tests.mqtt_helpers import Listener, SlowReturnProxy
from tests.test_hq_allocate import SKU, dropkit_hq
from tests.test_hq_allocation_faults import request, state

pytestmark = pytest.mark.usefixtures("mosquitto")  # a skip, or a failure in CI

SALES = 5


def connections(kit: SimKit) -> int:
    return sum("uplink connected" in line for line in kit.log)


def reconnect(kit: SimKit, proxy: SlowReturnProxy) -> None:
    """Cut the kit's link to the broker; return once it is connected again."""
    before = connections(kit)
    proxy.cut()
    wait_for(lambda: connections(kit) > before, 15, "the kit connected again")


class Copies:
    """The kit's ``orders`` messages as the broker carries them: each sale's copies."""

    def __init__(self, broker: Broker, kit_id: str) -> None:
        self.listener = Listener(broker, f"dropkit/{kit_id}/orders")
        self.seen: dict[str, int] = {}

    def count(self) -> int:
        while not self.listener.messages.empty():
            message = json.loads(self.listener.messages.get()[1])
            if message["type"] == "sale":
                self.seen[message["order_id"]] = self.seen.get(message["order_id"], 0) + 1
        return sum(self.seen.values())


def test_unanswered_sales_go_again_once_per_connection_not_per_hq_online(
        tmp_path: Path) -> None:
    """Three HQ instances on one PostgreSQL; the kit's chain is held by the test, so no
    instance can answer its five sales. Two more instances come online (HQ was online: no
    copy), then the kit's link is cut and it connects again, hearing the three instances'
    retained ``online`` (one copy of the five, at that connection). Before, each ``online``
    sent all five again: 5 + 5 + 5 + up to 15."""
    broker = Broker(tmp_path / "broker").start()
    proxy = SlowReturnProxy(broker, delay_s=0)
    with postgres_database() as url:
        def instance(name: str) -> Hq:
            hq = Hq(broker, url)
            hq.extra_args = ["--shared-group", "hq", "--client-id", name]
            return hq.start()

        instances = [instance("hq-1")]
        config = write_config(tmp_path / "kit.toml", {"kit": {"id": "kit-r"}, "mqtt": {
            **broker.kit_mqtt(url=proxy.url), "resend_after_s": 3600}})
        kit = SimKit(tmp_path / "kit", config).start()
        copies = Copies(broker, "kit-r")
        try:
            wait_for(lambda: kit.health()["mode"] == "online", 20, "the kit online")
            with holding(url, "SELECT pg_advisory_xact_lock(?, hashtext(?))", CHAIN_LOCKS,
                         "kit-r"):
                sold = [kit.place([{"sku": SKU, "qty": 1}]).data["order_id"]
                        for _ in range(SALES)]
                wait_for(lambda: all(kit.request("GET", f"/api/orders/{order}").data[
                    "status"] == "relayed" for order in sold), 10, "the sales relayed")
                assert copies.count() == SALES
                instances += [instance("hq-2"), instance("hq-3")]
                reconnect(kit, proxy)
                wait_for(lambda: copies.count() >= 2 * SALES, 10, "the sales sent again")
            wait_for(lambda: all(kit.request("GET", f"/api/orders/{order}").data["status"] ==
                                 "reconciled" for order in sold), 20, "every sale answered")
            assert kit.health()["queue_depth"] == 0
            assert copies.count() == 2 * SALES, copies.seen
            said = [line for line in kit.log if "unanswered sale(s) sent again" in line]
            assert len(said) == 1 and f": {SALES} unanswered" in said[0], said
            assert instances[0].query("SELECT count(*), count(DISTINCT order_id) FROM "
                                      "sales") == [(SALES, SALES)]
            print(f"{SALES} sales, {copies.count()} copies on the broker")
        finally:
            copies.listener.close()
            kit.stop()
            for hq in instances:
                hq.stop()
            proxy.close()
            broker.stop()


def test_a_refused_allocation_is_said_once(tmp_path: Path) -> None:
    """Kit A holds three zines for customers when HQ lowers its ten to two; HQ is stopped
    before A answers, so the refused allocation stays retained, and comes again at each of A's
    connections: A answers each time (HQ may not have the answer) but says it once."""
    broker = Broker(tmp_path / "broker").start()
    proxy = SlowReturnProxy(broker, delay_s=0)
    db = str(tmp_path / "hq.db")
    stock = write_manifest(tmp_path / "stock.toml", [(SKU, "Zine no. 7", 800, 20)])
    hq = Hq(broker, db, stock=stock).start()
    config = write_config(tmp_path / "kit-a.toml", {
        "kit": {"id": "kit-a"}, "mqtt": broker.kit_mqtt(url=proxy.url)})
    a = SimKit(tmp_path / "kit-a", config).start()
    answers = Listener(broker, "dropkit/kit-a/manifest/answer")
    try:
        wait_for(lambda: a.health()["mode"] == "online", 20, "A online")
        given = dropkit_hq("allocate", "--db", db, "--to", "kit-a", "--sku", SKU, "--qty", "10")
        assert given.returncode == 0 and " done" in given.stdout, given
        holds = [a.place([{"sku": SKU, "qty": 1}], staff=False, source=f"127.0.0.{n + 2}")
                 for n in range(3)]
        assert all(hold.status == 201 for hold in holds), holds
        assert a.stop() == 0
        move_id = request(db, "--from", "kit-a", "--qty", "8")
        wait_for(lambda: state(db, move_id) == "releasing", 10, "A's manifest #2 published")
        assert hq.stop() == 0

        def refusals() -> int:
            return sum("HQ's allocation #2 refused" in line for line in a.log)

        a.start()
        answers.next("manifest/answer", 15)
        for _ in range(2):
            reconnect(a, proxy)
            answer = json.loads(answers.next("manifest/answer", 15)[1])
            assert (answer["seq"], answer["result"]) == (2, "refused"), answer
        assert refusals() == 1, [line for line in a.log if "HQ's allocation" in line]

        hq = Hq(broker, db, stock=stock).start()
        wait_for(lambda: state(db, move_id) == "refused", 15, "HQ has A's refusal")
        wait_for(lambda: a.health()["manifest"]["version"] == "hq-3", 10,
                 "A's manifest published again as it was")
        assert refusals() == 1
    finally:
        answers.close()
        if a.proc.poll() is None:
            a.stop()
        hq.stop()
        proxy.close()
        broker.stop()
