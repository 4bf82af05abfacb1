"""``dropkit watch``: the remote ops view, a live table of every kit seen on the broker.

It subscribes to every kit's ``status``, ``telemetry/power`` and ``events`` and shows, per kit:
its status, the source feeding it, battery percent, mode, queue depth, when it was last heard
and the latest alerts.

    >>> board = Board()
    >>> board.take("dropkit/kit-1/status", b"online", now=100.0)
    >>> board.kits["kit-1"].status
    'online'
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent.uplink.mqtt import new_client

ALERT_EVENTS = {"order_rejected", "mismatch", "refund_due", "sensor_fault", "paper_out",
                "printer_offline", "shutdown_pending", "shutdown"}


@dataclass
class KitView:
    status: str = "?"
    feeding: str = "?"
    battery: str = "?"
    power_state: str = "?"
    mode: str = "?"
    queue_depth: str = "?"
    last_seen: float = 0.0
    alerts: deque[str] = field(default_factory=lambda: deque(maxlen=3))


class Board:
    """What the watcher knows of each kit, from the messages it has seen."""

    def __init__(self) -> None:
        self.kits: dict[str, KitView] = {}
        self.lock = threading.Lock()

    def take(self, topic: str, payload: bytes, now: float) -> None:
        parts = topic.split("/")
        if len(parts) < 3:
            return
        kit_id, kind = parts[1], "/".join(parts[2:])
        with self.lock:
            kit = self.kits.setdefault(kit_id, KitView())
            kit.last_seen = now
            if kind == "status":
                kit.status = payload.decode("utf-8", "replace")[:20]
                return
            try:
                data = json.loads(payload)
            except ValueError:
                return
            if not isinstance(data, dict):
                return
            if kind == "telemetry/power":
                self._telemetry(kit, data)
            elif kind == "events":
                event = data.get("event") or {}
                if isinstance(event, dict) and event.get("type") in ALERT_EVENTS:
                    kit.alerts.append(f"{event['type']} {event.get('order_id', '')}".strip())
                if isinstance(event, dict) and event.get("type") == "mode":
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

    def table(self, now: float) -> Any:
        from rich.table import Table

        table = Table(title="dropkit: kits on the broker")
        for column in ("kit", "status", "feeding", "battery", "power", "mode", "queue",
                       "last seen", "alerts"):
            table.add_column(column)
        with self.lock:
            for kit_id, kit in sorted(self.kits.items()):
                status = f"[green]{kit.status}[/]" if kit.status == "online" else \
                    f"[red]{kit.status}[/]"
                table.add_row(kit_id, status, kit.feeding, kit.battery, kit.power_state,
                              kit.mode, kit.queue_depth, f"{now - kit.last_seen:.0f} s ago",
                              "; ".join(kit.alerts))
        return table


def watch(broker: str, *, topic_prefix: str = "dropkit", once_after: float | None = None,
          username: str = "", password: str = "", ca_file: str = "") -> None:
    """Show the table live until Ctrl-C; with ``once_after``, print it once after that long."""
    from rich.console import Console
    from rich.live import Live

    board = Board()
    built = new_client(broker, username=username, password=password, ca_file=ca_file)
    client = built.paho
    client.on_connect = lambda c, u, f, rc, p: c.subscribe(
        [(f"{topic_prefix}/+/status", 1), (f"{topic_prefix}/+/telemetry/power", 0),
         (f"{topic_prefix}/+/events", 1)])
    client.on_message = lambda c, u, m: board.take(m.topic, m.payload, time.time())
    built.connect_async()
    client.loop_start()
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
        client.loop_stop()
        client.disconnect()
