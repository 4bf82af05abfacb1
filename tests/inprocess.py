"""A real :class:`agent.app.kit.Kit` in the test's own process and event loop.

The kit is wired as ``dropkit sim`` wires it (simulated printer, scanner, panel and power rig, a
real SQLite store in the test's directory); the web layer is :func:`agent.web.app.build_app`
driven through httpx's ASGI transport. Nothing of the project is mocked: a fault is made in the
simulated hardware or the store, the way a real one would come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.app.daemon import demo_manifest
from agent.app.kit import Kit, Wiring
from agent.config import parse_config
from agent.core.clock import Clock
from tests.test_printing import eventually as eventually

FIRST_RETRY_S = 0.05
"""The supervisor's first wait before a restart, in these tests (0.5 s in the daemon)."""
SETTLE_S = 0.3
"""How long a restarted part must run to count as running again (2 s in the daemon)."""


@dataclass
class Running:
    """A started kit and an HTTP client on its app."""

    kit: Kit
    http: httpx.AsyncClient

    @property
    def staff(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.kit.staff_token}"}

    async def health(self) -> dict[str, Any]:
        answer = await self.http.get("/api/health")
        assert answer.status_code == 200, answer.text
        return answer.json()

    async def order(self, *lines: tuple[str, int], order_id: str | None = None,
                    method: str = "cash", staff: bool = True) -> httpx.Response:
        """A sale at the till (``staff``), or a customer's reservation."""
        return await self.http.post("/api/orders", json={
            "order_id": order_id or str(uuid.uuid4()),
            "lines": [{"sku": sku, "qty": qty} for sku, qty in lines],
            "payment": {"method": method}}, headers=self.staff if staff else None)

    def health_when(self, test: Callable[[dict[str, Any]], bool]
                    ) -> Callable[[], Awaitable[dict[str, Any] | None]]:
        """A probe for ``eventually``: the health once ``test(health)`` holds."""
        async def probe() -> dict[str, Any] | None:
            health = await self.health()
            return health if test(health) else None
        return probe

    async def part(self, name: str) -> dict[str, Any]:
        return (await self.health())["parts"].get(name, {})


@contextlib.asynccontextmanager
async def running_kit(state_dir: Path, sections: Mapping[str, Mapping[str, Any]] | None = None,
                      manifest: str | None = None, clock: Clock | None = None,
                      loopback: bool = False) -> AsyncIterator[Running]:
    """Start a simulated kit on the running loop (on ``clock``, the system's when None);
    stop it (and close its store) after. With ``loopback`` the daemon's own HTTP server
    serves it on a free port of 127.0.0.1 and the client talks to it there."""
    from agent.web.app import build_app

    config = parse_config({"kit": {"id": "kit-inproc"}, **(sections or {})},
                          source="test config")
    served: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    kit = Kit(config, Wiring(simulated=True, state_dir=state_dir, host="127.0.0.1", port=0,
                             manifest=demo_manifest() if manifest is None else manifest,
                             clock=clock, on_ready=lambda url, _: served.set_result(url)))
    # Public knobs of the supervisor; the backoff of each part is made from them at its start.
    kit.supervisor.first_retry_s, kit.supervisor.settle_s = FIRST_RETRY_S, SETTLE_S
    if loopback:
        async with _served(kit, served) as url, httpx.AsyncClient(base_url=url,
                                                                  timeout=30) as client:
            yield Running(kit, client)
        return
    await kit.start()
    kit.serving_at("http://kit/")  # the app is reached through httpx's ASGI transport
    try:
        # Each part reports "running" at its first step, and the parts' tasks take their first
        # steps in the order they were made: once one shows, all have (stopping a kit before
        # that fails: see test_a_kit_stopped_right_after_its_start_stops_cleanly).
        await eventually(lambda: kit.supervisor.parts)
        transport = httpx.ASGITransport(app=build_app(kit), client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://kit") as client:
            yield Running(kit, client)
    finally:
        await kit.stop()


@contextlib.asynccontextmanager
async def _served(kit: Kit, served: asyncio.Future[str]) -> AsyncIterator[str]:
    """The daemon's serving of ``kit`` (:func:`agent.app.daemon.serve_kit`) on this loop:
    its URL once it listens; asked to exit after, as the shutdown sequence asks it."""
    import gc

    from agent.app.daemon import serve_kit

    serving = asyncio.get_running_loop().create_task(serve_kit(kit))
    try:
        await asyncio.wait({serving, served}, return_when=asyncio.FIRST_COMPLETED)
        if not served.done():
            await serving  # it ended before it listened: its error
            raise AssertionError("the kit stopped before it served")
        await eventually(lambda: kit.supervisor.parts)
        yield served.result()
    finally:
        kit.request_exit()
        await serving
        gc.unfreeze()  # the daemon froze what its start made, for the process's lifetime


def run_logged(scenario: Callable[[], Coroutine[Any, Any, None]],
               caplog: pytest.LogCaptureFixture) -> None:
    """Run ``scenario`` on a new loop with the kit's log at INFO in ``caplog``."""
    # httpx's logger first: each call sets the capturing handler's level too.
    caplog.set_level(logging.WARNING, logger="httpx")  # a line per request otherwise
    caplog.set_level(logging.INFO)
    asyncio.run(scenario())
