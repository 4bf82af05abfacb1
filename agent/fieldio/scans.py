"""Scans routed to the staff page: each one's meaning (:mod:`agent.core.scans`) as an event."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from agent.core.scans import scan_meaning

if TYPE_CHECKING:
    from agent.fieldio.printing import EventSink
    from agent.store import Store
    from hw.scanner import Scan

log = logging.getLogger(__name__)


class ScanRouter:
    """Turns each scan into a ``scan`` event (:func:`~agent.core.scans.scan_meaning`'s answer),
    in scan order.

    ``on_scan`` and ``on_device`` are the callbacks of :class:`hw.scanner.ScannerWatcher`;
    a scanner coming or going is published as a ``scanner`` event (``name``, ``present``).
    Each scan is routed as a short job through ``spawn`` (the supervisor's), so a failure is
    logged and shows as a degraded part.
    """

    def __init__(self, store: Store, publish: EventSink,
                 spawn: Callable[[Coroutine[Any, Any, object]], object]) -> None:
        self.store, self.publish, self.spawn = store, publish, spawn
        self._in_turn = asyncio.Lock()

    def on_scan(self, scan: Scan) -> None:
        self.spawn(self._route_in_turn(scan.text))

    def on_device(self, name: str, present: bool) -> None:
        self.publish("scanner", {"name": name, "present": present})

    async def route(self, text: str) -> dict[str, Any]:
        """Publish what ``text`` means and return it."""
        meaning = await self.store.read(lambda db: scan_meaning(db, text))
        if meaning["kind"] == "unknown":
            log.warning("scan %r is neither a SKU on sale nor a receipt", text[:80])
        elif meaning["kind"] == "receipt" and meaning["order_id"] is None:
            log.warning("scan: receipt %s is not in this kit's chain", meaning["hash"])
        elif meaning["kind"] == "pickup" and meaning["order_id"] is None:
            log.warning("scan: no reservation has the pickup code %s", meaning["code"])
        else:
            log.info("scan: %s", meaning)
        self.publish("scan", meaning)
        return meaning

    async def _route_in_turn(self, text: str) -> None:
        async with self._in_turn:
            await self.route(text)
