"""What ops can see of one HQ instance: ``/metrics`` in the Prometheus text format
(:meth:`Metrics.render`), from this instance's counters and the ledger's held messages.

    >>> metrics = Metrics()
    >>> metrics.count("garbage")
    >>> text = metrics.render({"held": [("kit-a", 2)], "duplicates": 3})
    >>> for line in text.splitlines():
    ...     if not line.startswith("#") and "_total 0" not in line:
    ...         print(line)
    dropkit_hq_garbage_total 1
    dropkit_hq_ledger_up 1
    dropkit_hq_duplicates_total 3
    dropkit_hq_held{kit="kit-a"} 2
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
    "messages": "sales, voids and refunds this instance recorded (repeats included)",
    "acks": "acks this instance sent to kits",
    "rejections": "sales this instance answered rejected (central stock, a broken chain)",
    "garbage": "messages that were not a sale, void or refund (dropped)",
    "batches": "ledger transactions that recorded messages",
}
PER_KIT = {
    "held": "messages held for a missing receipt link (the ledger's, all instances)",
    "missing": "receipt links HQ went on without after --hold-s (the gaps in the chain)",
    "faults": "broken or forked receipt links refused",
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

    def render(self, gauges: dict[str, Any] | None) -> str:
        """The text format; ``gauges`` is :meth:`agent.hq.ledger.Ledger.gauges` (None when
        the ledger cannot be read: then ``dropkit_hq_ledger_up`` is 0)."""
        with self._lock:
            counts, lag = dict(self._counts), dict(self._lag)
        out = []

        def metric(name: str, kind: str, help_text: str, samples: Iterable[tuple[str, Any]]
                   ) -> None:
            out.extend([f"# HELP dropkit_hq_{name} {help_text}",
                        f"# TYPE dropkit_hq_{name} {kind}"])
            out.extend(f"dropkit_hq_{name}{labels} {value}" for labels, value in samples)

        for name, help_text in COUNTERS.items():
            metric(f"{name}_total", "counter", help_text, [("", counts.get(name, 0))])
        metric("ledger_up", "gauge", "whether this instance can read the ledger",
               [("", int(gauges is not None))])
        ledger = gauges or {}
        metric("duplicates_total", "counter", "messages recorded before and answered again "
               "(the ledger's, all instances)", [("", ledger.get("duplicates", 0))])
        for name, help_text in PER_KIT.items():
            metric(name, "gauge", help_text,
                   [(f'{{kit="{_label(kit)}"}}', n) for kit, n in ledger.get(name, [])])
        metric("kit_lag_seconds", "gauge", "age of the kit's latest message when this "
               "instance recorded it (by the kit's clock, when set)",
               [(f'{{kit="{_label(kit)}"}}', f"{seconds:.3f}")
                for kit, seconds in sorted(lag.items())])
        return "\n".join(out) + "\n"
