"""Allocations through faults, with a real Mosquitto, ``dropkit hq`` on a PostgreSQL ledger of
the test's own and real ``dropkit sim`` kits: a kit's answer to its manifest that HQ could not
record yet (the ledger's connection dropped; HQ killed with SIGKILL) is recorded once HQ can,
without the kit's help; and the kits' manifests go again after a broker that forgot them even
when the ledger failed just then.

To catch HQ between a kit's answer and its record, the test holds the kit's ``kit_manifests``
row (``SELECT ... FOR UPDATE``), so HQ's write of the answer waits for it; kit A is stopped with
SIGSTOP while HQ publishes its manifest, so its answer comes only once the row is held."""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ops.harness import (
    Broker,
    Hq,
    SimKit,
    query_ledger,
    wait_for,
    write_config,
    write_manifest,
)
from tests.hq_helpers import (
    cut_off_when_blocked,
    holding,
    postgres_database,
    waiting_for_locks,
)
from tests.test_broker_forgot import hq_connections
from tests.test_hq_allocate import SKU, dropkit_hq, zines

pytestmark = pytest.mark.usefixtures("mosquitto")  # a skip, or a failure in CI


def request(url: str, *args: str) -> int:
    """``dropkit hq allocate`` without waiting for the kits; the move's id."""
    asked = dropkit_hq("allocate", "--db", url, "--sku", SKU, "--wait", "0", *args)
    assert asked.returncode == 3, asked
    return int(re.search(r"move #(\d+)", asked.stdout).group(1))


def state(url: str, move_id: int) -> str:
    return query_ledger(url, "SELECT state FROM moves WHERE id = ?", move_id)[0][0]


class Moving:
    """The broker, HQ with twenty zines in central stock, and kits A and B given ten each; then
    a move of five from A to B, A's answer to its lowered manifest held up at HQ's write."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.broker = Broker(tmp_path / "broker").start()
        self.stock = write_manifest(tmp_path / "stock.toml", [(SKU, "Zine no. 7", 800, 20)])
        self.hq = Hq(self.broker, url, stock=self.stock).start()
        self.kits = {}
        for name in ("kit-a", "kit-b"):
            config = write_config(tmp_path / f"{name}.toml", {
                "kit": {"id": name}, "mqtt": self.broker.kit_mqtt()})
            self.kits[name] = SimKit(tmp_path / name, config).start()
            wait_for(lambda kit=self.kits[name]: kit.health()["mode"] == "online", 20, "online")
            given = dropkit_hq("allocate", "--db", url, "--to", name, "--sku", SKU, "--qty",
                               "10")
            assert given.returncode == 0 and " done" in given.stdout, given
        self.a, self.b = self.kits["kit-a"], self.kits["kit-b"]

    @contextlib.contextmanager
    def answer_held_up(self) -> Iterator[int]:
        """Move five zines from A to B; A's answer comes once the test holds A's
        ``kit_manifests`` row, so HQ's write of it waits until the block ends. Yields the
        move's id once HQ waits."""
        os.kill(self.a.proc.pid, signal.SIGSTOP)
        try:
            move_id = request(self.url, "--from", "kit-a", "--to", "kit-b", "--qty", "5")
            wait_for(lambda: state(self.url, move_id) == "releasing", 10,
                     "HQ published A's lowered manifest")
            with holding(self.url, "SELECT * FROM kit_manifests WHERE kit_id = ? FOR UPDATE",
                         "kit-a"):
                os.kill(self.a.proc.pid, signal.SIGCONT)
                wait_for(lambda: waiting_for_locks(self.url, "UPDATE kit_manifests"), 10,
                         "HQ writing A's answer")
                yield move_id
        finally:
            os.kill(self.a.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        for kit in self.kits.values():
            if kit.proc.poll() is None:
                kit.stop()
        if self.hq.proc.poll() is None:
            assert self.hq.stop() == 0
        self.broker.stop()


def test_an_answer_the_ledger_dropped_is_recorded_when_it_is_back(tmp_path: Path) -> None:
    """The ledger's connection drops while HQ writes kit A's answer: HQ keeps the answer
    (unacknowledged to the broker) and records it at its next try, and the move goes on to B
    at once, not at some later connection that makes A answer again."""
    with postgres_database() as url:
        drop = Moving(tmp_path, url)
        try:
            with drop.answer_held_up() as move_id:
                cut_off_when_blocked(url, "UPDATE kit_manifests")
                wait_for(lambda: any("allocations wait" in line for line in drop.hq.log), 10,
                         "HQ says the ledger failed")
            wait_for(lambda: state(url, move_id) == "done", 10, "the move done")
            assert (zines(drop.a)["allocated"], zines(drop.b)["allocated"]) == (5, 15)
        finally:
            drop.close()


def test_hq_killed_between_an_answer_and_its_record_moves_on_when_back(tmp_path: Path) -> None:
    """HQ is killed with SIGKILL while it writes kit A's answer, and A goes off for the day
    (its answer given): HQ, started again, still has the answer (the broker sends it again,
    as it was never acknowledged) and raises B's allocation without A."""
    with postgres_database() as url:
        drop = Moving(tmp_path, url)
        try:
            with drop.answer_held_up() as move_id:
                drop.hq.kill()
            assert drop.a.stop() == 0
            drop.hq = Hq(drop.broker, url, stock=drop.stock).start()
            wait_for(lambda: state(url, move_id) == "done", 15, "the move done without A")
            assert zines(drop.b)["allocated"] == 15
        finally:
            drop.close()


def test_manifests_go_again_after_a_forgetful_broker_though_the_ledger_failed(
        tmp_path: Path) -> None:
    """A broker restarted without persistence forgot kit A's retained manifest (A was away);
    HQ, connected again, is to publish every kit's manifest again, but the ledger's connection
    drops in that very step. The manifests must still go (at the next step), or A, coming back,
    never hears of its allocation and the move waits for ever."""
    broker = Broker(tmp_path / "broker", persistence=False).start()
    stock = write_manifest(tmp_path / "stock.toml", [(SKU, "Zine no. 7", 800, 20)])
    with postgres_database() as url:
        hq = Hq(broker, url, stock=stock).start()
        try:
            move_id = request(url, "--to", "kit-a", "--qty", "10")
            wait_for(lambda: state(url, move_id) == "adding", 10, "A's manifest published")
            # HQ's steps wait for the move the test holds, across the broker's restart.
            with holding(url, "SELECT * FROM moves WHERE id = ? FOR UPDATE", move_id):
                wait_for(lambda: waiting_for_locks(url, "SELECT * FROM moves"), 10,
                         "HQ's step waiting for the move")
                broker.kill()
                broker.start()
                wait_for(lambda: hq_connections(hq) >= 2, 15, "HQ connected again")
                # The step that began before the broker went, then the first after HQ's
                # return, with every kit's manifest to publish again.
                first = cut_off_when_blocked(url, "SELECT * FROM moves")
                cut_off_when_blocked(url, "SELECT * FROM moves", spare=[first])
            config = write_config(tmp_path / "kit-a.toml", {
                "kit": {"id": "kit-a"}, "mqtt": broker.kit_mqtt()})
            a = SimKit(tmp_path / "kit-a", config).start()
            wait_for(lambda: a.health()["manifest"]["version"] == "hq-1", 15,
                     "A has its manifest from HQ")
            wait_for(lambda: state(url, move_id) == "done", 10, "the move done")
            assert zines(a)["allocated"] == 10
            assert a.stop() == 0
        finally:
            if hq.proc.poll() is None:
                assert hq.stop() == 0
            broker.stop()
