"""``dropkit watch``: the remote ops view, a live table of every kit seen on the broker.

It subscribes to every kit's ``status``, ``telemetry/power`` and ``events``, and to HQ's
instances' statuses (``hq/#``), and shows, per kit: its status, the source feeding it, battery
percent, mode, queue depth, when it was last heard and what waits for someone; with
``--hq-url``, what each HQ instance's ``/metrics`` says (:mod:`agent.ops.hqview`).

What it shows is only what it last heard, so it says plainly when that may no longer hold: while
the watcher has lost the broker (every kit is then ``unknown``), for a kit not heard since the
broker came back (a broker that restarted without its persistence forgot the kits' retained
statuses), and for a kit silent for :data:`STALE_S` (``stale``). A lasting alert (paper out, a
sensor faulted, a shutdown pending) is shown until the event that ends it (``printer_ready``,
``sensor_recovered``, ``shutdown_cancelled``); the latest alerts about orders stay beside them.

    >>> board = Board()
    >>> board.connected(now=99.0)
    >>> board.take("dropkit/kit-1/status", b"online", now=100.0)
    >>> board.rows(now=101.0)[0].status
    'online'
    >>> board.lost(now=102.0)
    >>> board.rows(now=105.0)[0].status
    'unknown (last heard online 5 s ago)'
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent.ops.hqview import HqPoller, HqSample
from agent.uplink.mqtt import new_client

STALE_S = 30.0
"""A kit not heard for this long is shown stale: three of its telemetry intervals (10 s)."""
ORDER_ALERTS = {"order_rejected", "mismatch", "refund_due"}
# A lasting alert: the condition it names, and the events that end each condition.
CONDITIONS = {"paper_out": "printer", "cover_open": "printer", "printer_offline": "printer",
              "sensor_fault": "sensor", "shutdown_pending": "shutdown", "shutdown": "shutdown"}
ENDS = {"printer_ready": "printer", "sensor_recovered": "sensor",
        "shutdown_cancelled": "shutdown"}


@dataclass
class KitView:
    status: str = "?"
    feeding: str = "?"
    battery: str = "?"
    power_state: str = "?"
    mode: str = "?"
    queue_depth: str = "?"
    last_seen: float = 0.0
    conditions: dict[str, str] = field(default_factory=dict)
    """Lasting alerts by what they are about (``printer``, ``sensor:gauge``, ``shutdown``)."""
    order_alerts: deque[str] = field(default_factory=lambda: deque(maxlen=3))

    @property
    def alerts(self) -> list[str]:
        return [*self.conditions.values(), *self.order_alerts]


@dataclass(frozen=True)
class Row:
    """One kit as the table shows it; ``fresh`` is False when its figures may be out of date."""

    kit_id: str
    status: str
    fresh: bool
    feeding: str
    battery: str
    power_state: str
    mode: str
    queue_depth: str
    last_seen: str
    alerts: str
    at_hq: str = ""
    """What HQ's instances (``--hq-url``) say of the kit: its lag, messages held, gaps, faults."""


class Board:
    """What the watcher knows of each kit and of HQ, from the messages it has seen, and
    whether it has the broker."""

    def __init__(self, broker: str = "", hq: list[HqSample] | None = None) -> None:
        self.broker = broker
        self.hq_metrics = hq or []
        """Each HQ instance's ``/metrics`` (:class:`agent.ops.hqview.HqPoller` keeps them)."""
        self.kits: dict[str, KitView] = {}
        self.hq: dict[str, str] = {}
        """Each HQ instance's status (``dropkit-hq``, or ``group/client-id``)."""
        self.broker_up = False
        self.broker_since = 0.0  # when the watcher last connected, or lost the broker
        self.reconnected = False  # connected again after losing the broker
        self.lock = threading.Lock()

    def connected(self, now: float) -> None:
        with self.lock:
            self.reconnected = self.broker_since > 0.0
            self.broker_up, self.broker_since = True, now
            self.hq.clear()  # told again by the retained statuses, if the broker kept them

    def lost(self, now: float) -> None:
        with self.lock:
            if self.broker_up:
                self.broker_up, self.broker_since = False, now

    def take(self, topic: str, payload: bytes, now: float) -> None:
        parts = topic.split("/")
        if len(parts) < 3:
            return
        if parts[1] == "hq":
            with self.lock:
                self.hq["/".join(parts[2:])] = payload.decode("utf-8", "replace")[:20]
            return
        kit_id, kind = parts[1], "/".join(parts[2:])
        with self.lock:
            kit = self.kits.setdefault(kit_id, KitView())
            kit.last_seen = now
            if kind == "status":
                kit.status = payload.decode("utf-8", "replace")[:20]
                if kit.status == "online":
                    kit.conditions.pop("shutdown", None)  # it started again
                return
            try:
                data = json.loads(payload)
            except ValueError:
                return
            if not isinstance(data, dict):
                return
            if kind == "telemetry/power":
                self._telemetry(kit, data)
            elif kind == "events" and isinstance(event := data.get("event"), dict):
                self._event(kit, event)

    @staticmethod
    def _event(kit: KitView, event: dict[str, Any]) -> None:
        kind = str(event.get("type"))
        sensor = f":{event['sensor']}" if isinstance(event.get("sensor"), str) else ""
        if kind in ORDER_ALERTS:
            kit.order_alerts.append(f"{kind} {event.get('order_id', '')}".strip())
        elif kind in CONDITIONS:
            about = CONDITIONS[kind] + (sensor if kind == "sensor_fault" else "")
            kit.conditions[about] = f"{kind}{sensor.replace(':', ' ')}"
        elif kind in ENDS:
            about = ENDS[kind] + (sensor if kind == "sensor_recovered" else "")
            kit.conditions.pop(about, None)
        elif kind == "mode":
            kit.mode = str(event.get("state"))

    @staticmethod
    def _telemetry(kit: KitView, data: dict[str, Any]) -> None:
        kit.feeding = str(data.get("feeding") or "?")
        kit.power_state = str(data.get("state") or "?")
        kit.mode = str(data.get("mode") or kit.mode)
        kit.queue_depth = str(data.get("queue_depth", "?"))
        ups = data.get("ups")
        if isinstance(ups, dict) and isinstance(ups.get("percent"), int | float):
            kit.battery = f"{ups['percent']:.0f}%"

    def headline(self, now: float) -> str:
        """The broker's state in words: lost (and since when), back, or connected."""
        with self.lock:
            since = f"{now - self.broker_since:.0f} s ago"
            broker = self.broker or "the broker"
            if not self.broker_up:
                return (f"BROKER LOST {since}: {broker} does not answer; what follows is what "
                        f"was heard before" if self.broker_since else
                        f"connecting to {broker} ...")
            if self.reconnected:
                return f"{broker}: connected again {since}"
            return f"{broker}: connected"

    def rows(self, now: float) -> list[Row]:
        """Each kit as the table shows it, its status in plain words."""
        with self.lock:
            return [self._row(kit_id, kit, now) for kit_id, kit in sorted(self.kits.items())]

    def _row(self, kit_id: str, kit: KitView, now: float) -> Row:
        ago = now - kit.last_seen
        heard = f"last heard {kit.status} {ago:.0f} s ago"
        if not self.broker_up:
            status, fresh = f"unknown ({heard})", False
        elif self.reconnected and kit.last_seen < self.broker_since:
            status, fresh = f"not heard since the broker came back ({heard})", False
        elif ago > STALE_S:
            status, fresh = f"stale ({heard})", False
        else:
            status, fresh = kit.status, True
        at_hq = "; ".join(said for sample in self.hq_metrics if (said := sample.kit(kit_id)))
        return Row(kit_id, status, fresh, kit.feeding, kit.battery, kit.power_state, kit.mode,
                   kit.queue_depth, f"{ago:.0f} s ago", "; ".join(kit.alerts), at_hq)

    def hq_line(self) -> str:
        """HQ's instances' statuses on the broker."""
        with self.lock:
            return "HQ: " + (", ".join(f"{name} {status}"
                                       for name, status in sorted(self.hq.items())) or
                             "no instance heard")

    def hq_lines(self, now: float) -> list[str]:
        """:meth:`hq_line`, then a line per instance's ``/metrics``."""
        return [self.hq_line(), *(sample.line(now) for sample in self.hq_metrics)]

    def table(self, now: float) -> Any:
        from rich.table import Table

        headline = self.headline(now)
        style = "bold red" if headline.startswith("BROKER LOST") else ""
        table = Table(title=f"dropkit: kits on the broker\n[{style or 'default'}]{headline}[/]",
                      caption="\n".join(self.hq_lines(now)))
        columns = ["kit", "status", "feeding", "battery", "power", "mode", "queue", "last seen",
                   "alerts"] + (["at HQ"] if self.hq_metrics else [])
        for column in columns:
            table.add_column(column)
        for row in self.rows(now):
            colour = "green" if row.fresh and row.status == "online" else \
                "yellow" if not row.fresh else "red"
            cells = [row.kit_id, f"[{colour}]{row.status}[/]", row.feeding, row.battery,
                     row.power_state, row.mode, row.queue_depth, row.last_seen, row.alerts]
            table.add_row(*cells, *([row.at_hq] if self.hq_metrics else []),
                          style="" if row.fresh else "dim")
        return table


def listen(board: Board, broker: str, *, topic_prefix: str = "dropkit", username: str = "",
           password: str = "", ca_file: str = "") -> Any:
    """A paho client (its network thread started) that keeps ``board`` up to date."""
    built = new_client(broker, username=username, password=password, ca_file=ca_file)
    client = built.paho

    def connected(c: Any, userdata: Any, flags: Any, reason_code: Any, props: Any) -> None:
        if reason_code.is_failure:
            return
        board.connected(time.time())
        c.subscribe([(f"{topic_prefix}/+/status", 1), (f"{topic_prefix}/+/telemetry/power", 0),
                     (f"{topic_prefix}/+/events", 1), (f"{topic_prefix}/hq/#", 1)])

    client.on_connect = connected
    client.on_disconnect = lambda c, u, f, rc, p: board.lost(time.time())
    client.on_message = lambda c, u, m: board.take(m.topic, m.payload, time.time())
    built.connect_async()
    client.loop_start()
    return client


def watch(broker: str, *, topic_prefix: str = "dropkit", once_after: float | None = None,
          username: str = "", password: str = "", ca_file: str = "",
          hq_urls: list[str] | None = None) -> None:
    """Show the table live until Ctrl-C; with ``once_after``, print it once after that long.
    ``hq_urls``: HQ instances whose ``/metrics`` to show."""
    from rich.console import Console
    from rich.live import Live

    poller = HqPoller(hq_urls or []).start()
    board = Board(broker, poller.samples)
    client = listen(board, broker, topic_prefix=topic_prefix, username=username,
                    password=password, ca_file=ca_file)
    try:
        if once_after is not None:
            time.sleep(once_after)
            Console().print(board.table(time.time()))
            return
        with Live(board.table(time.time()), refresh_per_second=2) as live:
            while True:
                time.sleep(0.5)
                live.update(board.table(time.time()))
    except KeyboardInterrupt:
        pass
    finally:
        poller.stop()
        client.loop_stop()
        client.disconnect()
