"""The kit's field devices as the daemon runs them: receipt printer, scanners, panel.

``dropkit run`` reads the real ones (python-escpos, evdev, gpiozero's default pin factory or
lgpio on the gpiochip that ``[panel] chip`` names); ``dropkit sim`` puts the same parts on the
simulators (an ESC/POS printer on loopback, a virtual scanner, gpiozero's MockFactory). A
device that is missing or fails never stops the daemon: it shows in ``/api/health`` as a
degraded part and sales go on.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config import Config
from agent.core import printjobs
from agent.core.clock import now_iso
from agent.fieldio.panel import PanelController
from agent.fieldio.paper import PaperWords
from agent.fieldio.printing import PrintQueue, on_network_printer, printer_off
from agent.fieldio.scans import ScanRouter
from agent.store import Store

if TYPE_CHECKING:
    from gpiozero.pins import Factory

    from hw.panel import Panel
    from hw.scanner import ScannerWatcher
    from simulators.devices import SimulatedDevices

log = logging.getLogger(__name__)

# Device events remote ops hear about (through the durable outbox), not only the staff page.
OPS_EVENTS = {"paper_out", "paper_near_end", "cover_open", "printer_offline", "printer_ready",
              "scanner"}
ALERTS = {"paper_out", "cover_open", "printer_offline"}


@dataclass(frozen=True)
class DeviceOutputs:
    """Where the devices report and what they act on; each called on the loop.

    - ``publish(kind, data)``: a live event for the staff pages;
    - ``record(event)``: a durable event for remote ops;
    - ``printer(status)``, ``scanners(devices)``, ``panel(health)``: the devices' state;
    - ``spawn(name, job)``: run a short job (a button's action) the kit tracks;
    - ``set_latch(latched)``, ``latched()``, ``request_shutdown()``: what the panel drives;
    - ``kit_url()``: where the kit serves its pages (``http://10.42.0.1:8080/``), for the
      receipts' links; None until it is known.
    """

    publish: Callable[[str, dict[str, Any]], object]
    record: Callable[[dict[str, Any]], object]
    printer: Callable[[dict[str, Any]], object]
    scanners: Callable[[list[str]], object]
    panel: Callable[[dict[str, Any]], object]
    spawn: Callable[[str, Any], object]
    set_latch: Callable[[bool], Awaitable[object]]
    latched: Callable[[], bool]
    request_shutdown: Callable[[], Awaitable[object]]
    kit_url: Callable[[], str | None]


class FieldDevices:
    """Builds, runs (as supervised parts) and stops the field devices of one kit."""

    def __init__(self, config: Config, store: Store, outputs: DeviceOutputs, *,
                 simulated: bool, state_dir: Path, kit_id: str) -> None:
        self.config, self.store, self.out = config, store, outputs
        self.kit_id, self.simulated, self.state_dir = kit_id, simulated, state_dir
        self.sim: SimulatedDevices | None = None
        self.print_queue: PrintQueue | None = None
        self.watcher: ScannerWatcher | None = None
        self.panel: Panel | None = None
        self.controller: PanelController | None = None
        self._chip_factory: Factory | None = None  # an lgpio factory of [panel] chip

    def start(self) -> dict[str, str]:
        """Build the devices on the loop; returns the ones that cannot start, and why."""
        config, failed = self.config, {}
        printer_config, discover, pin_factory = config.printer, None, None
        panel_pins: dict[str, Any] = config.panel.pins()
        if self.simulated:
            from simulators.devices import SimulatedDevices

            self.sim = SimulatedDevices(self.state_dir, panel_pins=panel_pins,
                                        long_press_s=config.panel.long_press_s).start()
            if config.printer.enabled:
                printer_config = on_network_printer(config.printer, self.sim.printer.host,
                                                    self.sim.printer.port,
                                                    self.sim.paper_width_mm)
            discover, pin_factory, panel_pins = (self.sim.discover_scanners,
                                                 self.sim.pin_factory, self.sim.panel_pins)
        if printer_config.enabled:
            words = PaperWords(
                shop_name=config.receipt.shop_name or config.kit.name, kit_id=self.kit_id,
                config=config.receipt,
                link=lambda seq, hash: config.receipt.link(self.kit_id, seq, hash,
                                                           kit_url=self.out.kit_url()))
            self.print_queue = PrintQueue(self.store, printer_config, words,
                                          on_event=self._device_event)
            self.out.printer(self.print_queue.status)
        if config.scanner.enabled:
            from hw.scanner import ScannerWatcher, open_input_devices

            router = ScanRouter(self.store, self._device_event,
                                spawn=lambda job: self.out.spawn("scanner", job))
            self.watcher = ScannerWatcher(
                router.on_scan, self._scanner_came_or_went(router), match=config.scanner.match(),
                discover=discover or open_input_devices,
                rescan_interval=config.scanner.rescan_interval_s,
                scan_timeout=config.scanner.scan_timeout_s)
        if config.panel.enabled:
            error = self._open_panel(pin_factory, panel_pins)
            if error:
                failed["panel"] = error
        return failed

    def parts(self) -> dict[str, Callable[[], Awaitable[object]]]:
        """The long-running tasks to supervise."""
        parts: dict[str, Callable[[], Awaitable[object]]] = {}
        if self.print_queue is not None:
            parts["printer"] = self.print_queue.run
        if self.watcher is not None:
            parts["scanner"] = self.watcher.run
        return parts

    def close(self) -> None:
        """Free the pins and stop the simulators (after the parts stopped)."""
        if self.panel is not None:
            self.panel.close()
            self.panel = None
        self._close_chip_factory()
        if self.sim is not None:
            self.sim.stop()

    def _open_panel(self, pin_factory: Factory | None, pins: dict[str, Any]) -> str:
        config = self.config.panel
        self.controller = PanelController(
            set_latch=self.out.set_latch, latched=self.out.latched,
            request_reprint_last=self.reprint_last, request_shutdown=self.out.request_shutdown,
            spawn=lambda job: self.out.spawn("panel", job),
            pressed=lambda button: self.out.publish("button", {"button": button}))
        try:
            from gpiozero.exc import PinFactoryFallback

            from hw.panel import Panel

            if pin_factory is None and config.chip >= 0:
                from hw.gpiochip import chip_pin_factory

                # Ours to close: gpiozero closes only the default factory it made itself.
                pin_factory = self._chip_factory = chip_pin_factory(config.chip)
            # gpiozero warns once per pin library it cannot load; the outcome is one line.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PinFactoryFallback)
                self.panel = Panel(asyncio.get_running_loop(), self.controller.handle, pins,
                                   long_press=config.long_press_s, pin_factory=pin_factory)
        except Exception as exc:  # no GPIO here (not a Pi, or pins taken): no panel
            self._close_chip_factory()
            error = f"{type(exc).__name__}: {exc}"
            self.out.panel({"state": "unavailable", "error": error})
            return error
        self.controller.attach(self.panel)
        self.out.panel({"state": "ready", "leds": dict(self.controller.patterns)})
        return ""

    def _close_chip_factory(self) -> None:
        if self._chip_factory is not None:
            self._chip_factory.close()
            self._chip_factory = None

    def show(self, *, mode: str, uplink: str, power: str, alerts: list[str]) -> None:
        """Show the kit's state on the panel's LEDs (the coordinator calls it on a change)."""
        if self.controller is None or self.panel is None:
            return
        before = dict(self.controller.patterns)
        try:
            after = self.controller.show(mode=mode, uplink=uplink, power=power, alerts=alerts)
        except ValueError:  # an LED that is not fitted
            return
        if after != before:
            self.out.panel({"state": "ready", "leds": dict(after)})

    async def reprint(self, order_id: str) -> int:
        """Queue a copy of an order's receipt; raises a ``not_found`` refusal."""
        job = await self.store.write(
            lambda db: printjobs.enqueue_reprint(db, order_id, now_iso()))
        self.wake_printer()
        return job

    async def reprint_last(self) -> None:
        if await self.store.write(lambda db: printjobs.enqueue_reprint_last(db, now_iso())):
            self.wake_printer()

    async def print_test_slip(self) -> dict[str, Any]:
        """A test slip, printed now (``dropkit preflight --test-slip``): what became of it."""
        if self.print_queue is None:
            raise printer_off()
        return await self.print_queue.print_test_slip([
            self.config.kit.name, f"Kit {self.kit_id}", "printer test slip", now_iso(),
            "not a receipt: nothing was sold"])

    def wake_printer(self) -> None:
        """A receipt job was committed: print it now."""
        if self.print_queue is not None:
            self.print_queue.wake()

    def _scanner_came_or_went(self, router: ScanRouter) -> Callable[[str, bool], None]:
        def changed(name: str, present: bool) -> None:
            router.on_device(name, present)
            if self.watcher is not None:
                self.out.scanners(list(self.watcher.devices))
        return changed

    def _device_event(self, kind: str, data: dict[str, Any]) -> None:
        self.out.publish(kind, data)
        if kind == "printer":
            self.out.printer(data)
        if kind in ALERTS:
            self.out.publish("alert", {"type": kind})
        if kind in OPS_EVENTS:
            self.out.record({"type": kind, **_flat(data)})


def _flat(data: dict[str, Any]) -> dict[str, Any]:
    """Event fields for remote ops: scalars only (the staff page gets the whole status)."""
    return {key: value for key, value in data.items()
            if isinstance(value, str | int | float | bool) or value is None}
