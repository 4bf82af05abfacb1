"""What health tells the till beyond the parts: the shutdown's countdown as it stands when
asked, and what waits for HQ by kind (sales, not the outbox's events)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from agent.app.coordinator import Coordinator
from tests.inprocess import eventually, running_kit

NO_PRINTER = {"printer": {"enabled": False}}


async def _nothing_waits() -> dict[str, int]:
    return {}


def test_health_counts_the_shutdown_down_from_when_the_monitor_reported_it() -> None:
    async def scenario() -> None:
        coordinator = Coordinator("kit-state", _nothing_waits)
        heard: list[tuple[str, ...]] = []
        coordinator.listen(lambda new, old: heard.append(new.alerts))
        reported = time.monotonic()
        counting = {"state": "OB DISCHRG", "seq": 7, "shutdown_in_s": 10.0}
        coordinator.update(power=counting)
        state = await coordinator.current()
        power = state.health()["power"]
        since = time.monotonic() - reported
        assert 10.0 - since - 0.1 <= power["shutdown_in_s"] <= 10.0  # counted from the report
        at = datetime.fromisoformat(power["shutdown_at"])
        assert abs((at - datetime.now(UTC)).total_seconds() - power["shutdown_in_s"]) < 0.5
        assert "shutdown_pending" in state.alerts and heard == [("shutdown_pending",)]
        coordinator.update(power=dict(counting))  # the same status again: the same deadline
        assert coordinator.state is state and len(heard) == 1
        # The countdown ends in the commit (FSD, 0 s): once orders are refused, it is the
        # status "stopping" that says so, not an alert.
        coordinator.update(power={"state": "FSD OB DISCHRG LB", "seq": 8, "shutdown_in_s": 0.0})
        assert coordinator.state.health()["power"]["shutdown_in_s"] == 0.0
        coordinator.update(refusal="shutting down")
        assert "shutdown_pending" not in coordinator.state.alerts
        assert coordinator.state.status == "stopping"
        # Mains back before the commit: no countdown, no alert, no time.
        other = Coordinator("kit-state", _nothing_waits)
        other.update(power=counting)
        other.update(power={"state": "OL CHRG", "seq": 8, "shutdown_in_s": None})
        power = other.state.health()["power"]
        assert (power["shutdown_in_s"], power["shutdown_at"]) == (None, None)
        assert other.state.alerts == ()
    asyncio.run(scenario())


def test_health_says_how_many_sales_and_refunds_wait_for_hq(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            latched = await k.http.post("/api/staff/mode", json={"offline": True},
                                        headers=k.staff)
            assert latched.status_code == 200  # its mode event is for HQ too, but no sale
            first = await eventually(k.health_when(lambda h: h["queue_depth"] > 0))
            assert first["waiting"] == {"sale": 0, "void": 0, "refund": 0}
            sale = (await k.order(("ZINE-07", 1))).json()
            await k.order(("PIN-LOGO", 1))
            refunded = await k.http.post(f"/api/staff/orders/{sale['order_id']}/refund",
                                         json={}, headers=k.staff)
            assert refunded.status_code == 200
            health = await k.health()
            assert health["waiting"] == {"sale": 2, "void": 0, "refund": 1}
            assert health["queue_depth"] >= 3 + first["queue_depth"]
    asyncio.run(scenario())
