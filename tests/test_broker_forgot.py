"""A broker that forgot everything: a plain Mosquitto without persistence (as the README's recipe
starts one), killed with SIGKILL mid-drop and started again empty, beside a real ``dropkit hq``
and a real ``dropkit sim``. HQ's session, its subscription and every retained status are gone;
the kit's sales sold meanwhile must still reach HQ once each, soon after HQ is back (not at the
kit's resend a minute later), the kit must be online again within seconds, and ``dropkit
watch``'s board must say the broker is lost while it is, and not show a resolved alert."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.ops.harness import Answer, Broker, Hq, SimKit, wait_for, write_config
from agent.ops.watch import Board, Row, listen

pytestmark = pytest.mark.usefixtures("mosquitto")  # a skip, or a failure in CI

SKU = "ZINE-07"  # in the demo manifest dropkit sim sells


def hq_connections(hq: Hq) -> int:
    return sum("HQ connected" in line for line in hq.log)


class Drop:
    """The broker, HQ, a kit and a watcher's board, the kit online with one sale reconciled."""

    def __init__(self, tmp_path: Path) -> None:
        self.broker = Broker(tmp_path / "broker", persistence=False).start()
        self.hq = Hq(self.broker, tmp_path / "hq.db").start()
        # The kit's [mqtt] as a new user writes it: the URL, and telemetry often enough to watch.
        config = write_config(tmp_path / "kit.toml", {
            "kit": {"id": "kit-forgot"},
            "mqtt": {"url": self.broker.url, "telemetry_interval_s": 1.0}})
        self.kit = SimKit(tmp_path / "kit", config).start()
        self.board = Board(self.broker.url)
        self.watcher = listen(self.board, self.broker.url)
        wait_for(lambda: self.kit.health()["mode"] == "online", 20, "the kit online")
        first = self.sell()
        assert first.data["status"] == "reconciled", first.data
        self.ids = [first.data["order_id"]]
        wait_for(lambda: self.row() and self.row().status == "online", 10,
                 "watch sees the kit online")

    def sell(self) -> Answer:
        answer = self.kit.place([{"sku": SKU, "qty": 1}])
        assert answer.status == 201, answer.data
        return answer

    def row(self) -> Row | None:
        rows = self.board.rows(time.time())
        return rows[0] if rows else None

    def status(self, order_id: str) -> str:
        return self.kit.request("GET", f"/api/orders/{order_id}").data["status"]

    def lose_the_broker(self) -> None:
        """SIGKILL the broker; the kit sells five sales offline; watch says the broker is lost."""
        self.broker.kill()
        wait_for(lambda: self.kit.health()["mode"] == "offline", 10, "the kit offline")
        wait_for(lambda: self.board.headline(time.time()).startswith("BROKER LOST"), 10,
                 "watch says the broker is lost")
        shown = self.row()
        assert shown.status.startswith("unknown (last heard online") and not shown.fresh
        offline = [self.sell() for _ in range(5)]
        assert all(answer.data["status"] == "queued" for answer in offline)
        self.ids += [answer.data["order_id"] for answer in offline]

    def back_within_10_s_of(self, hq_back: float) -> float:
        """Every sale reconciled and the kit online within 10 s of HQ's return (the kit's
        resend_after_s is 60 s); HQ holds each sale once. Returns how long the kit took."""
        wait_for(lambda: all(self.status(i) == "reconciled" for i in self.ids), 10,
                 "every sale reconciled within 10 s of HQ's return")
        online = wait_for(lambda: self.kit.health()["mode"] == "online" and time.monotonic(),
                          10, "the kit online again within 10 s of HQ's return")
        assert dict(self.hq.query("SELECT order_id, count(*) FROM sales GROUP BY order_id")) \
            == dict.fromkeys(self.ids, 1)
        # The watcher has the broker again, and the kit fresh once it spoke again.
        wait_for(lambda: self.board.headline(time.time()).startswith(
            f"{self.broker.url}: connected"), 10, "watch has the broker again")
        wait_for(lambda: self.row().fresh and self.row().status == "online", 10,
                 "watch: the kit online")
        wait_for(lambda: self.row().queue_depth == "0", 10, "watch: the kit's queue empty")
        return online - hq_back

    def close(self) -> None:
        self.watcher.loop_stop()
        self.watcher.disconnect()
        self.kit.stop()
        if self.hq.proc.poll() is None:
            assert self.hq.stop() == 0
        self.broker.stop()


def test_hq_running_through_a_broker_that_forgot(tmp_path: Path) -> None:
    """The issue's case: only the broker restarts; HQ reconnects by itself, to a new session."""
    drop = Drop(tmp_path)
    try:
        # A lasting alert, then its end: watch shows it, then no longer.
        drop.kit.request("POST", "/api/staff/sim/paper", {"level": "out"}, staff=True)
        wait_for(lambda: "paper_out" in drop.row().alerts, 15, "watch shows paper_out")
        drop.kit.request("POST", "/api/staff/sim/paper", {"level": "ok"}, staff=True)
        wait_for(lambda: "paper_out" not in drop.row().alerts, 15, "watch clears paper_out")
        drop.lose_the_broker()
        drop.broker.start()  # the same port, nothing remembered
        hq_back = wait_for(lambda: hq_connections(drop.hq) >= 2 and time.monotonic(), 15,
                           "HQ connected again")
        assert any("session new" in line for line in drop.hq.log[-5:]), drop.hq.log[-5:]
        took = drop.back_within_10_s_of(hq_back)
        print(f"HQ kept running: the kit online {took:.1f} s after HQ's return")
        assert "paper_out" not in drop.row().alerts
        assert drop.board.hq_line() == "HQ: dropkit-hq online"
    finally:
        drop.close()


def test_the_kit_back_before_hq_relays_to_nobody_then_sends_again(tmp_path: Path) -> None:
    """The kit reconnects first and relays its offline sales to a broker where nobody
    subscribes (they are gone); HQ's ``online`` when it comes makes the kit send them again."""
    drop = Drop(tmp_path)
    try:
        drop.lose_the_broker()
        assert drop.hq.stop() == 0
        drop.broker.start()
        wait_for(lambda: drop.kit.health()["queue_depth"] == 0, 15,
                 "the kit relayed its queue to the empty broker")
        assert [drop.status(i) for i in drop.ids[1:]] == ["relayed"] * 5
        wait_for(lambda: drop.row() and drop.row().fresh, 10, "watch hears the kit again")
        assert drop.board.hq_line() == "HQ: no instance heard"
        drop.hq.start()
        took = drop.back_within_10_s_of(time.monotonic())
        print(f"HQ back after the kit: the kit online {took:.1f} s after HQ's return")
        assert any("unanswered sale(s) sent again" in line for line in drop.kit.log)
    finally:
        drop.close()
