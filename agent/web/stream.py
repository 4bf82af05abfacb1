"""The staff page's live events: server-sent events from the kit's event hub."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from agent.web.api import KitAPI

KEEP_ALIVE_S = 15.0
"""A comment line this often keeps proxies and phones from dropping a quiet stream."""


async def event_stream(kit: KitAPI) -> AsyncIterator[str]:
    """The kit's health first, then every event as it comes, until the daemon stops."""
    with kit.listen() as queue:
        yield f"event: health\ndata: {json.dumps(await kit.health())}\n\n"
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if event is None:
                return  # the daemon is stopping; the page reconnects to the next one
            kind, data = event
            yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
