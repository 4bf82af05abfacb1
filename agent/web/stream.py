"""The staff page's live events: server-sent events from the kit's event hub.

Each viewer sees only what they may: anyone on the kit's Wi-Fi the kinds in :data:`PUBLIC`
(the stock left, the mode, a new manifest), nothing about anyone's orders, scans or alerts;
staff (with a stream ticket, see :mod:`agent.web.tickets`) every event.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from agent.web.api import KitAPI

KEEP_ALIVE_S = 15.0
"""A comment line this often keeps proxies and phones from dropping a quiet stream."""
PUBLIC = frozenset({"availability", "mode", "manifest"})
"""The kinds of event an anonymous viewer gets."""


def _event(kind: str, data: object) -> str:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def event_stream(kit: KitAPI, staff: bool) -> AsyncIterator[str]:
    """First the kit's health (staff) or its mode (anyone), then every event the viewer may
    see as it comes, until the daemon stops."""
    with kit.listen() as queue:
        health = await kit.health()
        yield _event("health", health) if staff else \
            _event("mode", {"state": health["mode"], "reasons": health["mode_reasons"]})
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return  # the daemon is stopping; the page reconnects to the next one
            kind, data = event
            if staff or kind in PUBLIC:
                yield _event(kind, data)
