"""A small fan-out of live events (orders, mode, devices) to the staff pages that listen.

Each listener has a bounded queue: a page that stops reading loses old events, never the kit's
memory.

    >>> import asyncio
    >>> async def demo():
    ...     hub = EventHub()
    ...     with hub.listen() as events:
    ...         hub.publish("mode", {"state": "offline"})
    ...         return await events.get()
    >>> asyncio.run(demo())
    ('mode', {'state': 'offline'})
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

Event = tuple[str, dict[str, Any]]


class EventHub:
    def __init__(self, backlog: int = 100) -> None:
        self._listeners: set[asyncio.Queue[Event | None]] = set()
        self._backlog = backlog
        self._closed = False

    @staticmethod
    def _put(events: asyncio.Queue[Event | None], item: Event | None) -> None:
        if events.full():
            events.get_nowait()  # a listener that stopped reading loses its oldest event
        events.put_nowait(item)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        """Hand an event to every listener; call it on the event loop's thread."""
        for events in self._listeners:
            self._put(events, (kind, data))

    def close(self) -> None:
        """The daemon is stopping: every listener gets ``None`` after what it has, and ends."""
        self._closed = True
        for events in self._listeners:
            self._put(events, None)

    @contextlib.contextmanager
    def listen(self) -> Iterator[asyncio.Queue[Event | None]]:
        events: asyncio.Queue[Event | None] = asyncio.Queue(self._backlog)
        if self._closed:
            events.put_nowait(None)
        self._listeners.add(events)
        try:
            yield events
        finally:
            self._listeners.discard(events)
