"""Reservations in one process: a real Kit behind ``build_app``, on a clock the test drives
(the kit's own seam, :class:`agent.core.clock.Clock`), so a hold's ten minutes and a restart
in the middle of them are exact."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
from starlette.routing import Route

from agent.core.clock import Clock
from agent.web.app import build_app
from tests.inprocess import Running, eventually, running_kit

NO_PRINTER = {"printer": {"enabled": False}}
PUBLIC = {("GET", "/"), ("GET", "/till"), ("GET", "/static/{name}"), ("GET", "/api/health"),
          ("GET", "/api/manifest"), ("POST", "/api/orders"), ("GET", "/api/orders/{order_id}"),
          ("GET", "/api/orders/{order_id}/pickup.svg"), ("GET", "/api/events"),
          ("GET", "/r/{kit}/{seq}/{hash}")}
"""Every call a customer's page can make without the staff credential: reads (a receipt's
page among them), and a reservation. Nothing here settles a payment, voids, refunds or reprints."""


class Hands:
    """The kit's clocks, moved by the test: one boot (a restart of the daemon keeps it)."""

    def __init__(self) -> None:
        self.wall, self.mono = 1_790_000_000.0, 100.0

    def clock(self) -> Clock:
        return Clock(wall=lambda: self.wall, mono=lambda: self.mono, boot_id="boot-1",
                     synced=lambda: True)

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


async def reserve(k: Running, *lines: tuple[str, int]) -> dict[str, Any]:
    answer = await k.order(*lines, staff=False)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def left(k: Running, sku: str) -> int:
    items = (await k.http.get("/api/manifest")).json()["items"]
    return next(item["available"] for item in items if item["sku"] == sku)


def test_no_call_open_to_customers_settles_voids_refunds_or_reprints(tmp_path: Path) -> None:
    """The audit: every route of the app, each method; all but the listed public ones answer
    401 without the staff credential (with real ids in their paths), and a new route must be
    added here to be public."""
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            order = await reserve(k, ("ZINE-07", 1))
            fill = {"{order_id}": order["order_id"], "{code}": order["reservation"]["code"],
                    "{job_id}": "1", "{device}": "scan", "{name}": "shop.js"}
            app = build_app(k.kit)
            routes = [(method, route.path) for route in app.routes
                      if isinstance(route, Route) for method in sorted(route.methods or ())
                      if method != "HEAD"]
            assert set(routes) >= PUBLIC
            for n, (method, path) in enumerate(routes):
                if (method, path) in PUBLIC:
                    continue
                url = path
                for name, value in fill.items():
                    url = url.replace(name, value)
                # A customer each (the brake on guessing counts per address).
                transport = httpx.ASGITransport(app=app, client=(f"10.42.0.{n + 2}", 40000))
                async with httpx.AsyncClient(transport=transport, base_url="http://kit") as c:
                    answer = await c.request(method, url, json={
                        "result": "paid", "method": "cash", "restock": True, "offline": True})
                assert answer.status_code == 401, (method, path, answer.text)
            view = (await k.http.get(f"/api/orders/{order['order_id']}")).json()
            assert view["payment"] == {"method": None, "status": "unpaid"}
            assert view["status"] == "held"
    asyncio.run(scenario())


def test_a_hold_keeps_its_time_over_a_restart_and_a_clock_jump(tmp_path: Path) -> None:
    hands = Hands()

    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER, clock=hands.clock()) as k:
            order = await reserve(k, ("VINYL-LTD", 3))
            assert await left(k, "VINYL-LTD") == 7
        hands.tick(540)  # the kit is off for nine of the ten minutes
        hands.wall += 86_400  # and NTP sets its wall clock a day ahead: no hold ends for that
        async with running_kit(tmp_path, NO_PRINTER, clock=hands.clock()) as k:
            view = (await k.http.get(f"/api/orders/{order['order_id']}")).json()
            assert view["status"] == "held", view
            assert view["reservation"]["expires_in_s"] == 60.0
            assert await left(k, "VINYL-LTD") == 7
        hands.tick(61)  # it ran out while the kit was off: at the start, its stock is back
        async with running_kit(tmp_path, NO_PRINTER, clock=hands.clock()) as k:
            assert await eventually(lambda: _left_is(k, "VINYL-LTD", 10))
            view = (await k.http.get(f"/api/orders/{order['order_id']}")).json()
            assert view["status"] == "expired"
    asyncio.run(scenario())


def _drained(events: asyncio.Queue, kind: str, sku: str, units: int) -> bool:
    """Take the events so far; True once one was ``kind`` with ``units`` of ``sku`` left."""
    found = False
    while not events.empty():
        seen, data = events.get_nowait()
        found = found or (seen == kind and data["available"].get(sku) == units)
    return found


async def _left_is(k: Running, sku: str, units: int) -> bool:
    return await left(k, sku) == units


def test_the_sweep_ends_a_hold_on_time_and_tells_every_page(tmp_path: Path) -> None:
    hands = Hands()

    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER, clock=hands.clock()) as k:
            with k.kit.listen() as events:
                order = await reserve(k, ("PIN-LOGO", 5))
                hands.tick(599.9)
                k.kit.hold_sweep.wake()
                paid_in_time = await k.http.post(
                    f"/api/staff/orders/{order['order_id']}/payment",
                    json={"result": "paid", "method": "cash"}, headers=k.staff)
                assert paid_in_time.status_code == 200, paid_in_time.text
                other = await reserve(k, ("PIN-LOGO", 2))
                assert await left(k, "PIN-LOGO") == 193
                await eventually(lambda: _drained(events, "availability", "PIN-LOGO", 193))
                hands.tick(600)
                k.kit.hold_sweep.wake()
                seen: list[tuple[str, dict[str, Any]]] = []

                async def stock_back() -> bool:
                    while not events.empty():
                        seen.append(events.get_nowait())  # type: ignore[arg-type]
                    return any(kind == "availability" and data["available"]["PIN-LOGO"] == 195
                               for kind, data in seen)
                await eventually(stock_back)
                expired = [data for kind, data in seen if kind == "order"
                           and data["order_id"] == other["order_id"]]
                assert expired[-1]["status"] == "expired"
            view = (await k.http.get(f"/api/orders/{order['order_id']}")).json()
            assert view["payment"]["status"] == "paid" and view["receipt"]["seq"] == 1
    asyncio.run(scenario())


def test_a_repeat_after_the_hold_ran_out_answers_the_same_reservation(tmp_path: Path) -> None:
    hands = Hands()

    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER, clock=hands.clock()) as k:
            order_id = str(uuid.uuid4())
            first = await k.order(("ZINE-07", 1), order_id=order_id, staff=False)
            hands.tick(601)
            again = await k.order(("ZINE-07", 1), order_id=order_id, staff=False)
            assert again.status_code == 200, again.text
            assert again.json()["status"] == "expired"
            assert again.json()["reservation"]["code"] == first.json()["reservation"]["code"]
            assert await left(k, "ZINE-07") == 120
    asyncio.run(scenario())
