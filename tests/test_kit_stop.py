"""The kit's stop closes the store whatever a part does: it hangs, or the stop is cancelled."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from agent.app import kit as kit_module
from agent.app.daemon import demo_manifest
from agent.app.kit import Kit, Wiring
from agent.config import parse_config


def sim_kit(state_dir: Path) -> Kit:
    config = parse_config({"kit": {"id": "kit-test"}, "printer": {"enabled": False}})
    return Kit(config, Wiring(simulated=True, state_dir=state_dir, host="127.0.0.1", port=0,
                              manifest=demo_manifest()))


async def stubborn(release: asyncio.Event) -> None:
    """A part that swallows its cancellation until released (a stuck driver call)."""
    while not release.is_set():
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            continue


def test_a_part_that_hangs_is_named_and_the_store_closes_anyway(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(kit_module, "STOP_TIMEOUT_S", 0.3)

    async def scenario() -> None:
        kit, release = sim_kit(tmp_path), asyncio.Event()
        await kit.start()
        kit.supervisor.start("stuck_driver", lambda: stubborn(release))
        await asyncio.sleep(0)
        await asyncio.wait_for(kit.stop(), 5)
        assert not kit.store.is_open
        release.set()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    assert "store closed while stuck_driver had not stopped" in caplog.text


def test_a_cancelled_stop_still_closes_the_store(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit_module, "STOP_TIMEOUT_S", 30)

    async def scenario() -> None:
        kit, release = sim_kit(tmp_path), asyncio.Event()
        await kit.start()
        sold = await kit.sales.place(kit.sales.parse(
            {"order_id": "order-before-stop", "lines": [{"sku": "ZINE-07", "qty": 1}]}), "t")
        kit.supervisor.start("stuck_driver", lambda: stubborn(release))
        await asyncio.sleep(0)
        stopping = asyncio.create_task(kit.stop())
        await asyncio.sleep(0.1)  # the stop waits on the stuck part
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping
        assert not kit.store.is_open
        release.set()
        assert sold[1] is True

    asyncio.run(scenario())
    # What was confirmed before the stop is in the closed store.
    db = sqlite3.connect(tmp_path / "dropkit.db")
    assert db.execute("SELECT count(*) FROM orders WHERE order_id = 'order-before-stop'"
                      ).fetchone() == (1,)
    db.close()


def test_a_stop_right_after_the_start_closes_everything(tmp_path: Path) -> None:
    async def scenario() -> None:
        kit = sim_kit(tmp_path)
        await kit.start()
        await kit.stop()  # before any part has run a step
        assert not kit.store.is_open
        assert {part.state for part in kit.supervisor.parts.values()} == {"stopped"}
        # Health still answers from the snapshot once the store is closed (the shutdown's
        # last minutes): no error for the staff page.
        assert (await kit.health())["kit_id"] == "kit-test"

    asyncio.run(scenario())
