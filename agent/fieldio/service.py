"""The kit's field devices as the daemon runs them: receipt printer, scanners, panel.

``dropkit run`` reads the real ones (python-escpos, evdev, gpiozero's default pin factory or
lgpio on the gpiochip that ``[panel] chip`` names); ``dropkit sim`` puts the same parts on the
simulators (an ESC/POS printer on loopback, a virtual scanner, gpiozero's MockFactory). A
device that is missing or fails never stops the daemon: it shows in ``/api/health`` and sales
go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from typing import TYPE_CHECKING, Any

from agent.core import printjobs
from agent.core.clock import now_iso
from agent.fieldio.printing import PrintQueue, on_network_printer

if TYPE_CHECKING:
    from gpiozero.pins import Factory

    from agent.app.daemon import Agent
    from agent.fieldio.panel import PanelController
    from hw.panel import Panel
    from hw.scanner import ScannerWatcher
    from simulators.devices import SimulatedDevices

log = logging.getLogger(__name__)

# Device events remote ops hear about (through the durable outbox), not only the staff page.
OPS_EVENTS = {"paper_out", "paper_near_end", "cover_open", "printer_offline", "printer_ready",
              "scanner"}
ALERTS = {"paper_out", "cover_open", "printer_offline"}
LED_REFRESH_S = 0.5


class Devices:
    """Starts, watches and stops the field devices of one agent."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.sim: SimulatedDevices | None = None
        self.print_queue: PrintQueue | None = None
        self.watcher: ScannerWatcher | None = None
        self.panel: Panel | None = None
        self.controller: PanelController | None = None
        self.panel_error = ""
        self._chip_factory: Factory | None = None  # an lgpio factory of [panel] chip
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        from agent.fieldio.panel import PanelController
        from agent.fieldio.scans import ScanRouter

        agent, config = self.agent, self.agent.config
        printer_config, discover, pin_factory = config.printer, None, None
        panel_pins: dict[str, Any] = config.panel.pins()
        if agent.wiring.simulated:
            from simulators.devices import SimulatedDevices

            self.sim = SimulatedDevices(agent.wiring.state_dir, panel_pins=panel_pins,
                                        long_press_s=config.panel.long_press_s).start()
            if config.printer.enabled:
                printer_config = on_network_printer(config.printer, self.sim.printer.host,
                                                    self.sim.printer.port,
                                                    self.sim.paper_width_mm)
            discover, pin_factory, panel_pins = (self.sim.discover_scanners,
                                                 self.sim.pin_factory, self.sim.panel_pins)
        if printer_config.enabled:
            self.print_queue = PrintQueue(
                agent.store, printer_config, kit_id=agent.kit_id, kit_name=config.kit.name,
                on_event=self._device_event)
            self._tasks.append(asyncio.create_task(self.print_queue.run()))
        if config.scanner.enabled:
            from hw.scanner import ScannerWatcher, open_input_devices

            router = ScanRouter(agent.store, self._device_event)
            self.watcher = ScannerWatcher(
                router.on_scan, router.on_device, match=config.scanner.match(),
                discover=discover or open_input_devices,
                rescan_interval=config.scanner.rescan_interval_s,
                scan_timeout=config.scanner.scan_timeout_s)
            self._tasks.append(asyncio.create_task(self.watcher.run()))
        if config.panel.enabled:
            self.controller = PanelController(
                set_latch=agent.set_staff_latch, latched=lambda: agent.mode.latched,
                request_reprint_last=self.reprint_last, request_shutdown=agent.request_shutdown)
            try:
                from gpiozero.exc import PinFactoryFallback

                from hw.panel import Panel

                if pin_factory is None and config.panel.chip >= 0:
                    from hw.gpiochip import chip_pin_factory

                    # Ours to close: gpiozero closes only the default factory it made itself.
                    pin_factory = self._chip_factory = chip_pin_factory(config.panel.chip)
                # gpiozero warns once per pin library it cannot load; the outcome is one line.
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", PinFactoryFallback)
                    self.panel = Panel(asyncio.get_running_loop(), self.controller.handle,
                                       panel_pins, long_press=config.panel.long_press_s,
                                       pin_factory=pin_factory)
            except Exception as exc:  # no GPIO here (not a Pi, or pins taken): no panel
                self._close_chip_factory()
                self.panel_error = f"{type(exc).__name__}: {exc}"
                log.warning("panel unavailable: %s", self.panel_error)
            else:
                self.controller.attach(self.panel)
                self._tasks.append(asyncio.create_task(self._keep_leds_current()))

    async def stop(self) -> None:
        """Stop reading and printing (a receipt being sent is finished first), free the pins."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.panel is not None:
            self.panel.close()
        self._close_chip_factory()
        if self.sim is not None:
            self.sim.stop()

    def _close_chip_factory(self) -> None:
        if self._chip_factory is not None:
            self._chip_factory.close()
            self._chip_factory = None

    def health(self) -> dict[str, Any]:
        return {
            "printer": self.print_queue.status if self.print_queue else {"state": "disabled"},
            "scanners": self.watcher.devices if self.watcher else [],
            "panel": ({"state": "ready", "leds": dict(self.controller.patterns)}
                      if self.panel and self.controller else
                      {"state": "unavailable", "error": self.panel_error} if self.panel_error
                      else {"state": "disabled"}),
        }

    async def reprint(self, order_id: str) -> int:
        """Queue a copy of an order's receipt; raises a ``not_found`` refusal."""
        job = await self.agent.store.write(
            lambda db: printjobs.enqueue_reprint(db, order_id, now_iso()))
        self._wake_printer()
        return job

    async def reprint_last(self) -> None:
        if await self.agent.store.write(lambda db: printjobs.enqueue_reprint_last(db, now_iso())):
            self._wake_printer()

    def sale_made(self) -> None:
        """A new sale's receipt job was committed with it: print it now."""
        self._wake_printer()

    def _wake_printer(self) -> None:
        if self.print_queue is not None:
            self.print_queue.wake()

    def _device_event(self, kind: str, data: dict[str, Any]) -> None:
        self.agent.events.publish(kind, data)
        if kind in ALERTS:
            self.agent.events.publish("alert", {"type": kind})
        if kind in OPS_EVENTS:
            self.agent.background(self.agent.record_event({"type": kind, **_flat(data)}))

    async def _keep_leds_current(self) -> None:
        assert self.controller is not None
        while True:
            agent = self.agent
            uplink = agent.uplink.state if agent.uplink else "off"
            alerts = ["printer"] if self.print_queue and \
                self.print_queue.status.get("state") in ("paper_out", "cover_open") else []
            with contextlib.suppress(ValueError):
                self.controller.show(mode=agent.mode.state, uplink=uplink,
                                     power=agent.power_state(), alerts=alerts)
            await asyncio.sleep(LED_REFRESH_S)


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    """Event fields for remote ops: scalars only (the staff page gets the whole status)."""
    return {key: value for key, value in data.items()
            if isinstance(value, str | int | float | bool) or value is None}
