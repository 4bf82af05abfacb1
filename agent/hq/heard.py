"""What HQ last heard of each kit (:class:`Heard`): its ``status`` and, from its
``telemetry/power``, when, its mode and its queue depth; kept in the ledger's ``kits`` table for
``dropkit hq preflight`` (every instance writes what it heard; the latest wins).

    >>> heard = Heard("dropkit")
    >>> heard.take("dropkit/kit-1/telemetry/power", b'{"queue_depth": 3, "mode": "online"}', 10.0)
    >>> heard.take("dropkit/hq/telemetry/power", b'{}', 10.0)   # not a kit's
    >>> heard.changed()
    [('kit-1', '', 0.0, 10.0, 3, 'online')]
"""

from __future__ import annotations

import json
import threading
from typing import Any

from agent.hq.sql import Database

MAX_BYTES = 16384


class Heard:
    """Kits' statuses and telemetry as they come (on paho's thread), written back in batches."""

    def __init__(self, topic_prefix: str) -> None:
        self.prefix = topic_prefix
        self._kits: dict[str, list[Any]] = {}  # kit -> [status, status_at, heard_at, depth, mode]
        self._changed: set[str] = set()
        self._lock = threading.Lock()

    def take(self, topic: str, payload: bytes, now: float) -> None:
        """A kit's ``status`` or ``telemetry/power``; ``now`` by the wall clock."""
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != self.prefix or parts[1] == "hq" or \
                len(payload) > MAX_BYTES:
            return
        kit_id, kind = parts[1], "/".join(parts[2:])
        with self._lock:
            kit = self._kits.setdefault(kit_id, ["", 0.0, 0.0, None, ""])
            if kind == "status":
                kit[0:2] = [payload.decode("utf-8", "replace")[:20], now]
            elif kind == "telemetry/power":
                try:
                    data = json.loads(payload)
                except (ValueError, RecursionError):
                    return
                if not isinstance(data, dict):
                    return
                depth = data.get("queue_depth")
                kit[2:5] = [now, depth if isinstance(depth, int) else None,
                            str(data.get("mode") or "")[:20]]
            else:
                return
            self._changed.add(kit_id)

    def changed(self) -> list[tuple[Any, ...]]:
        """The kits heard since they were last written, as ``kits`` rows."""
        with self._lock:
            return [(kit, *self._kits[kit]) for kit in sorted(self._changed)]

    def flush(self, db: Database) -> None:
        """Write what was heard since the last flush (nothing when nothing was); a write that
        fails leaves it all for the next flush."""
        rows = self.changed()
        if not rows:
            return
        with db.transaction() as tx:
            # A status or telemetry this instance has not heard leaves the stored one.
            tx.executemany(
                "INSERT INTO kits (kit_id, status, status_at, heard_at, queue_depth, mode) VALUES "
                "(?, ?, ?, ?, ?, ?) ON CONFLICT (kit_id) DO UPDATE SET "
                "status = CASE WHEN excluded.status_at > kits.status_at THEN excluded.status "
                "ELSE kits.status END, "
                "status_at = CASE WHEN excluded.status_at > kits.status_at THEN "
                "excluded.status_at ELSE kits.status_at END, "
                "queue_depth = CASE WHEN excluded.heard_at > kits.heard_at THEN "
                "excluded.queue_depth ELSE kits.queue_depth END, "
                "mode = CASE WHEN excluded.heard_at > kits.heard_at THEN excluded.mode "
                "ELSE kits.mode END, "
                "heard_at = CASE WHEN excluded.heard_at > kits.heard_at THEN excluded.heard_at "
                "ELSE kits.heard_at END", rows)
        with self._lock:  # written: forgotten, unless a kit was heard again meanwhile
            self._changed.difference_update(
                row[0] for row in rows if (row[0], *self._kits[row[0]]) == row)
