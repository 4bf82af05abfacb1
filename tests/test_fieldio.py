"""Scans, panel buttons and LEDs through the real drivers on their simulators, and the
simulated devices of ``dropkit sim`` driving the print queue, scanner watcher and panel."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

# The store, sales and waiting helpers of the print queue's tests (tests/ is on sys.path).
from test_printing import KIT_NAME, eventually, next_event, open_store, paper_words, sell

from agent.app.events import Event, EventHub
from agent.app.supervisor import Supervisor
from agent.config import PanelConfig, PrintingConfig
from agent.core.clock import now_iso
from agent.core.mode import Mode
from agent.core.printjobs import enqueue_reprint_last
from agent.fieldio.panel import PanelController
from agent.fieldio.printing import PrintQueue, on_network_printer
from agent.fieldio.scans import ScanRouter
from hw.panel import Panel
from hw.scanner import ScannerWatcher
from simulators.devices import SimulatedDevices
from simulators.scanner import FakeInputDevice

LONG_PRESS = 0.1
PINS = PanelConfig().pins()
OFFLINE, MODE_LED, UPLINK_LED, POWER_LED = (
    PINS[key] for key in ("offline_button", "mode_led", "uplink_led", "power_led"))
SHUTDOWN = 5


@contextlib.asynccontextmanager
async def running(*jobs: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def next_scan(events: asyncio.Queue[Event]) -> dict[str, Any]:
    return await next_event(events, "scan", timeout=2)


class Kit:
    """The agent's side of the panel: a Mode behind the latch, and requests it records."""

    def __init__(self) -> None:
        self.mode = Mode()
        self.reprints = 0
        self.shutdowns = 0

    async def set_latch(self, latched: bool) -> None:
        self.mode.set_latch(latched)

    async def request_reprint_last(self) -> None:
        self.reprints += 1

    async def request_shutdown(self) -> None:
        self.shutdowns += 1

    def controller(self) -> PanelController:
        return PanelController(set_latch=self.set_latch, latched=lambda: self.mode.latched,
                               request_reprint_last=self.request_reprint_last,
                               request_shutdown=self.request_shutdown,
                               spawn=jobs("panel"))



def jobs(part: str) -> Any:
    """A short-job runner as the kit gives its devices: the supervisor's, on the running loop."""
    supervisor = Supervisor(lambda name, health: None)
    return lambda job: supervisor.spawn(part, job)

def test_scans_become_sku_receipt_and_unknown_events(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        order = await sell(store, ("ZINE-07", 2))
        receipt_hash = order["receipt"]["hash"]
        device = FakeInputDevice("Honeywell Voyager 1250g")
        router = ScanRouter(store, hub.publish, spawn=jobs("scanner"))
        watcher = ScannerWatcher(router.on_scan, router.on_device, discover=lambda: [device],
                                 rescan_interval=0.05)
        with hub.listen() as events:
            async with running(watcher.run()):
                assert await next_event(events, "scanner", timeout=2) == {
                    "name": "Honeywell Voyager 1250g", "present": True}

                device.send(device.scanner.scan("ZINE-07"))
                assert await next_scan(events) == {"kind": "sku", "sku": "ZINE-07"}

                device.send(device.scanner.scan(receipt_hash))
                device.send(device.scanner.scan(receipt_hash.upper()))
                for _ in range(2):
                    assert await next_scan(events) == {"kind": "receipt", "hash": receipt_hash,
                                                       "order_id": order["order_id"]}

                stranger = hashlib.sha256(b"another kit's sale").hexdigest()
                device.send(device.scanner.scan(stranger))
                assert await next_scan(events) == {"kind": "receipt", "hash": stranger,
                                                   "order_id": None}

                device.send(device.scanner.junk_scan("ZINE-07"))
                device.send(device.scanner.scan("HELLO-42"))
                assert await next_scan(events) == {"kind": "unknown", "text": "HELLO-42"}
        store.close()

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    messages = [record.getMessage() for record in caplog.records]
    assert any("dropped scan 'ZINE-07' with unmapped keys KEY_F13" in m for m in messages)
    assert any("'HELLO-42' is neither a SKU on sale nor a receipt" in m for m in messages)
    assert any("is not in this kit's chain" in m for m in messages)


def test_panel_buttons_toggle_the_latch_reprint_and_request_shutdown() -> None:
    async def scenario() -> None:
        kit, factory = Kit(), MockFactory()
        kit.mode.set_uplink_healthy(True)
        controller = kit.controller()
        with Panel(asyncio.get_running_loop(), controller.handle, PINS, long_press=LONG_PRESS,
                   bounce_time=None, pin_factory=factory):
            button = factory.pin(OFFLINE)
            button.drive_low()
            button.drive_high()
            await eventually(lambda: kit.mode.latched)
            assert (kit.mode.state, kit.mode.reasons) == ("offline", ["staff_latch"])

            button.drive_low()
            button.drive_high()
            await eventually(lambda: not kit.mode.latched)
            assert kit.mode.state == "online"

            button.drive_low()  # held: a shutdown request, and no toggle
            await eventually(lambda: kit.shutdowns == 1)
            button.drive_high()
            await asyncio.sleep(LONG_PRESS * 2)
            assert not kit.mode.latched and kit.shutdowns == 1

            factory.pin(PINS["reprint_button"]).drive_low()
            await eventually(lambda: kit.reprints == 1)

    asyncio.run(scenario())


def test_with_a_shutdown_button_offline_toggles_at_the_press_and_never_shuts_down() -> None:
    async def scenario() -> None:
        kit, factory = Kit(), MockFactory()
        controller = kit.controller()
        with Panel(asyncio.get_running_loop(), controller.handle,
                   {**PINS, "shutdown_button": SHUTDOWN}, long_press=LONG_PRESS,
                   bounce_time=None, pin_factory=factory) as panel:
            controller.attach(panel)
            offline = factory.pin(OFFLINE)
            offline.drive_low()  # toggled at the press: no long press to wait for
            await eventually(lambda: kit.mode.latched)
            await asyncio.sleep(LONG_PRESS * 2)  # held: still no shutdown
            offline.drive_high()
            await asyncio.sleep(LONG_PRESS)
            assert kit.mode.latched and kit.shutdowns == 0

            shutdown = factory.pin(SHUTDOWN)
            shutdown.drive_low()
            shutdown.drive_high()  # a short press of the shutdown button means nothing
            await asyncio.sleep(LONG_PRESS * 2)
            assert kit.shutdowns == 0
            shutdown.drive_low()
            await eventually(lambda: kit.shutdowns == 1)
            shutdown.drive_high()
            await asyncio.sleep(LONG_PRESS)
            assert kit.shutdowns == 1 and kit.mode.latched

    asyncio.run(scenario())


async def toggles(factory: MockFactory, pin: int | str | None, seconds: float) -> int:
    """How often the pin changes in the next ``seconds``."""
    factory.pin(pin).clear_states()
    await asyncio.sleep(seconds)
    return len(factory.pin(pin).states) - 1


def test_leds_follow_show() -> None:
    async def scenario() -> None:
        kit, factory = Kit(), MockFactory()
        controller = kit.controller()
        with Panel(asyncio.get_running_loop(), controller.handle, PINS, long_press=LONG_PRESS,
                   bounce_time=None, pin_factory=factory) as panel:
            controller.attach(panel)
            assert controller.show(mode="online", uplink="connected", power="OL CHRG") == {
                "mode": "on", "uplink": "on", "power": "on"}
            assert all(factory.pin(p).state for p in (MODE_LED, UPLINK_LED, POWER_LED))

            assert controller.show(mode="offline", uplink="off", power="OB DISCHRG LB") == {
                "mode": "off", "uplink": "off", "power": "blink_fast"}
            assert not factory.pin(MODE_LED).state and not factory.pin(UPLINK_LED).state
            assert await toggles(factory, POWER_LED, 0.45) >= 2

            await kit.set_latch(True)
            assert controller.show(mode="offline", uplink="disconnected", power="OB") == {
                "mode": "blink_slow", "uplink": "blink_slow", "power": "blink_slow"}
            assert controller.show(mode="offline", uplink="connecting", power="",
                                   alerts=["paper_out"]) == {
                "mode": "blink_fast", "uplink": "blink_slow", "power": "off"}
            assert await toggles(factory, MODE_LED, 0.45) >= 2

    asyncio.run(scenario())


def test_simulated_devices_drive_the_real_parts(tmp_path: Path) -> None:
    async def scenario() -> None:
        devices = SimulatedDevices(tmp_path, panel_pins=PINS, long_press_s=LONG_PRESS).start()
        store, hub, kit = await open_store(tmp_path / "kit.db"), EventHub(), Kit()
        config = on_network_printer(PrintingConfig(port=1, timeout_s=0.3, status_interval_s=0.2),
                                    devices.printer.host, devices.printer.port,
                                    devices.paper_width_mm)
        assert (config.host, config.port) == ("127.0.0.1", devices.printer.port)
        queue = PrintQueue(store, config, paper_words(), on_event=hub.publish)
        router = ScanRouter(store, hub.publish, spawn=jobs("scanner"))
        watcher = ScannerWatcher(router.on_scan, router.on_device,
                                 discover=devices.discover_scanners, rescan_interval=0.05)

        async def reprint_last() -> None:
            await store.write(lambda db: enqueue_reprint_last(db, now_iso()))
            queue.wake()

        controller = PanelController(set_latch=kit.set_latch, latched=lambda: kit.mode.latched,
                                     request_reprint_last=reprint_last,
                                     request_shutdown=kit.request_shutdown,
                                     spawn=jobs("panel"))
        with (hub.listen() as events,
              Panel(asyncio.get_running_loop(), controller.handle, devices.panel_pins,
                    long_press=LONG_PRESS, pin_factory=devices.pin_factory)):
            async with running(queue.run(), watcher.run()):
                await next_event(events, "scanner")
                devices.scan("TEE-BLK-M")
                assert await next_scan(events) == {"kind": "sku", "sku": "TEE-BLK-M"}
                with pytest.raises(ValueError, match="cannot type"):
                    devices.scan("café")

                await sell(store, ("TEE-BLK-M", 1))
                queue.wake()
                await asyncio.to_thread(devices.printer.wait_for_receipts, 1)
                await next_event(events, "print_job")
                devices.press("reprint")
                printed = await asyncio.to_thread(devices.printer.wait_for_receipts, 2)
                assert printed[1].text.splitlines()[:2] == [" COPY ", KIT_NAME]
                assert printed[0].qr_payloads == printed[1].qr_payloads
                for name in ("receipt-1.txt", "receipt-1.png", "receipt-2.txt"):
                    assert (tmp_path / "printer" / name).exists()

                devices.press("offline")
                await eventually(lambda: kit.mode.latched)
                await devices.long_press("offline")
                assert kit.shutdowns == 1 and kit.mode.latched

                devices.set_paper("out")
                assert (await next_event(events, "paper_out"))["paper"] == "out"
                devices.set_printer_silent(True)
                assert (await next_event(events, "printer_offline"))["responding"] is False
                devices.set_cover_open(True)
                assert devices.state() == {
                    "printer": {"port": devices.printer.port, "paper": "out",
                                "cover_open": True, "silent": True, "printed": 2,
                                "output_dir": str(tmp_path / "printer")},
                    "scanner": "Simulated Barcode Scanner",
                    "buttons": ["offline", "reprint"]}
                with pytest.raises(ValueError, match="not fitted"):
                    devices.press("shutdown")
                with pytest.raises(ValueError, match="unknown button"):
                    devices.press("buzzer")
        store.close()
        devices.stop()

    asyncio.run(scenario())
