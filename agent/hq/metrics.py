"""What ops can see of one HQ instance: ``/metrics`` in the Prometheus text format
(:meth:`Metrics.render`), from this instance's counters and the ledger's held messages.

    >>> metrics = Metrics()
    >>> metrics.count("garbage")
    >>> "dropkit_hq_garbage_total 1" in metrics.render([])
    True
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from agent.hq.links import Link

COUNTERS = {
    "messages": "sales, voids and refunds recorded (repeats included)",
    "acks": "acks sent to kits",
    "rejections": "sales answered rejected (central stock, a broken or forked chain)",
    "duplicates": "messages recorded before, answered again",
    "gaps": "times HQ went on without a missing receipt link after --hold-s",
    "garbage": "messages that were not a sale, void or refund (dropped)",
    "batches": "ledger transactions that recorded messages",
}


def _seconds_since(iso: str, now: float) -> float | None:
    try:
        return now - datetime.fromisoformat(iso).timestamp()
    except (TypeError, ValueError):
        return None


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Metrics:
    """Counters of this instance (all threads may count) and each kit's lag."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._lag: dict[str, float] = {}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def value(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def recorded(self, links: Sequence[Link], acks: Sequence[tuple[str, dict[str, Any]]]
                 ) -> None:
        """A batch committed: its messages, the acks it sends, and each kit's lag (how long
        ago its latest message was made, by the kit's clock when that clock was set)."""
        now = time.time()
        with self._lock:
            if links:
                self._counts["batches"] += 1
            self._counts["messages"] += len(links)
            self._counts["acks"] += len(acks)
            self._counts["rejections"] += sum(ack["result"] == "rejected" for _, ack in acks)
            for link in links:
                lag = _seconds_since(link.message.get("created_at", ""), now)
                if lag is not None and link.message.get("clock_synced") is not False:
                    self._lag[link.kit_id] = max(lag, 0.0)

    def render(self, held: Iterable[tuple[str, int]], duplicates: int | None = None) -> str:
        """The text format; ``held`` is ``(kit, messages held)`` from the ledger."""
        with self._lock:
            counts, lag = dict(self._counts), dict(self._lag)
        if duplicates is not None:
            counts["duplicates"] = duplicates
        out = []
        for name, help_text in COUNTERS.items():
            out += [f"# HELP dropkit_hq_{name}_total {help_text}",
                    f"# TYPE dropkit_hq_{name}_total counter",
                    f"dropkit_hq_{name}_total {counts.get(name, 0)}"]
        out += ["# HELP dropkit_hq_held_messages messages held for a missing receipt link, "
                "per kit (the ledger's, all instances)", "# TYPE dropkit_hq_held_messages gauge"]
        out += [f'dropkit_hq_held_messages{{kit="{_label(kit)}"}} {n}' for kit, n in held]
        out += ["# HELP dropkit_hq_kit_lag_seconds age of the kit's latest message when this "
                "instance recorded it (the kit's clock)", "# TYPE dropkit_hq_kit_lag_seconds gauge"]
        out += [f'dropkit_hq_kit_lag_seconds{{kit="{_label(kit)}"}} {seconds:.3f}'
                for kit, seconds in sorted(lag.items())]
        return "\n".join(out) + "\n"
