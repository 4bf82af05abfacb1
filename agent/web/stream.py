"""The staff page's live events: server-sent events from the kit's event hub, bounded.

Each viewer sees only what they may: anyone on the kit's Wi-Fi the kinds in :data:`PUBLIC`
(the stock left, the mode, a new manifest, and the kit's status word: ``ready``, ``degraded``
or ``stopping``), nothing about anyone's orders, scans or alerts;
staff (with a stream ticket, see :mod:`agent.web.tickets`) every event.

The streams are capped: :data:`MAX_STREAMS` at once, :data:`MAX_STREAMS_PER_CLIENT` from one
address (one phone cannot take them all), each ending after :data:`LIFETIME_S`, when the
browser opens the next one by itself (``retry:``). A stream whose client stops reading is
closed by the server (docs/deploy.md); a queue of at most the hub's backlog waits for it
meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

from agent.core.errors import Refusal
from agent.web.api import KitAPI

KEEP_ALIVE_S = 15.0
"""A comment line this often keeps proxies and phones from dropping a quiet stream."""
MAX_STREAMS = 16
MAX_STREAMS_PER_CLIENT = 4
LIFETIME_S = 300.0
"""A stream ends after this long (a phone that left without closing it frees its place)."""
RETRY_MS = 1000
"""How soon the browser opens the next stream after one ends."""
PUBLIC = frozenset({"availability", "mode", "manifest", "status"})
"""The kinds of event an anonymous viewer gets; of ``status`` only the word (a locked till says
"Shutting down" before the kit goes, which a health poll may miss)."""


def _event(kind: str, data: object) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def event_stream(kit: KitAPI, staff: bool,
                       lifetime_s: float = LIFETIME_S) -> AsyncIterator[str]:
    """First the kit's health (staff) or its mode (anyone), then every event the viewer may
    see as it comes, until the daemon stops or ``lifetime_s`` is over."""
    ends = time.monotonic() + lifetime_s
    with kit.listen() as queue:
        health = await kit.health()
        yield f"retry: {RETRY_MS}\n" + (_event("health", health) if staff else _event(
            "mode", {"state": health["mode"], "reasons": health["mode_reasons"]}))
        while (left := ends - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(queue.get(), min(KEEP_ALIVE_S, left))
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return  # the daemon is stopping; the page reconnects to the next one
            kind, data = event
            if staff:
                yield _event(kind, data)
            elif kind in PUBLIC:
                yield _event(kind, {"status": data["status"]} if kind == "status" else data)


class Streams:
    """The event streams open, overall and by client address."""

    def __init__(self, most: int = MAX_STREAMS, per_client: int = MAX_STREAMS_PER_CLIENT) -> None:
        self.most, self.per_client = most, per_client
        self.by_client: Counter[str] = Counter()

    def check(self, client: str) -> None:
        """``503 busy`` when ``client`` may not open one more stream now."""
        if self.by_client.total() >= self.most or self.by_client[client] >= self.per_client:
            raise Refusal("busy", "too many live views of the kit are open; this page "
                          "tries again by itself", retry_after=5)

    def response(self, kit: KitAPI, client: str, *, staff: bool) -> StreamingResponse:
        """A stream for ``client`` (every event for ``staff``, else :data:`PUBLIC`), or
        ``503 busy`` when there are too many."""
        self.check(client)
        self.by_client[client] += 1
        return _Stream(event_stream(kit, staff), lambda: self._release(client))

    def _release(self, client: str) -> None:
        self.by_client[client] -= 1
        if not self.by_client[client]:
            del self.by_client[client]


class _Stream(StreamingResponse):
    """A stream that gives its place back however it ends (even before its first byte)."""

    def __init__(self, body: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache"})
        self._release = release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
