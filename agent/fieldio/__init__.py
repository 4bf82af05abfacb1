"""Field I/O: what a scan means, what a panel button does, what the LEDs show, and the
simulated devices of ``dropkit sim``.

The drivers in :mod:`hw` report facts on the event loop; this module decides what they mean.
Its effects are the agent's own coroutines and event hub, injected, so it keeps no state of the
kit. evdev, gpiozero and the simulators are imported only by the parts that use them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agent.config import PrintingConfig
from agent.fieldio.printing import EventSink
from agent.store import Store

if TYPE_CHECKING:
    from gpiozero.pins.mock import MockFactory, MockPin

    from hw.panel import LedName, LedPattern, PanelEvent, PinName
    from hw.scanner import Scan
    from simulators.printer import PaperState, PrinterSimulator
    from simulators.scanner import FakeInputDevice

log = logging.getLogger(__name__)

RECEIPT_HASH = re.compile(r"[0-9a-fA-F]{64}")
"""A receipt's QR code: its 64-hex-digit hash (upper case too, for scanners set that way)."""
UPLINK_LED: Mapping[str, LedPattern] = {"connected": "on", "off": "off"}
"""The uplink LED per uplink state; any other state (connecting, disconnected) blinks slowly."""
LONG_PRESS_MARGIN_S = 0.2
"""How much longer than the panel's long press :meth:`SimulatedDevices.long_press` holds."""


# -- scans ----------------------------------------------------------------------------------

def sku_on_sale(db: sqlite3.Connection, sku: str) -> bool:
    """True when ``sku`` is an item of the current manifest."""
    row = db.execute("SELECT 1 FROM items WHERE sku = ? AND active = 1", (sku,)).fetchone()
    return row is not None


def lookup_receipt(db: sqlite3.Connection, receipt_hash: str) -> str | None:
    """The order a receipt hash belongs to (its sale, void or refund), or None."""
    row = db.execute("SELECT order_id FROM receipts WHERE hash = ?",
                     (receipt_hash.lower(),)).fetchone()
    return None if row is None else row["order_id"]


def scan_meaning(db: sqlite3.Connection, text: str) -> dict[str, Any]:
    """What a scanned text is: ``sku`` on sale, ``receipt`` (its hash and order, None when
    the hash is not in this kit's chain) or ``unknown``. A SKU wins over a receipt."""
    if sku_on_sale(db, text):
        return {"kind": "sku", "sku": text}
    if RECEIPT_HASH.fullmatch(text):
        receipt_hash = text.lower()
        return {"kind": "receipt", "hash": receipt_hash,
                "order_id": lookup_receipt(db, receipt_hash)}
    return {"kind": "unknown", "text": text}


class ScanRouter:
    """Turns each scan into a ``scan`` event (:func:`scan_meaning`'s answer), in scan order.

    ``on_scan`` and ``on_device`` are the callbacks of :class:`hw.scanner.ScannerWatcher`;
    a scanner coming or going is published as a ``scanner`` event (``name``, ``present``).
    """

    def __init__(self, store: Store, publish: EventSink,
                 spawn: Callable[[Coroutine[Any, Any, object]], object]) -> None:
        self.store, self.publish, self.spawn = store, publish, spawn
        self._in_turn = asyncio.Lock()

    def on_scan(self, scan: Scan) -> None:
        self.spawn(self._route_in_turn(scan.text))

    def on_device(self, name: str, present: bool) -> None:
        self.publish("scanner", {"name": name, "present": present})

    async def route(self, text: str) -> dict[str, Any]:
        """Publish what ``text`` means and return it."""
        meaning = await self.store.read(lambda db: scan_meaning(db, text))
        if meaning["kind"] == "unknown":
            log.warning("scan %r is neither a SKU on sale nor a receipt", text[:80])
        elif meaning["kind"] == "receipt" and meaning["order_id"] is None:
            log.warning("scan: receipt %s is not in this kit's chain", meaning["hash"])
        else:
            log.info("scan: %s", meaning)
        self.publish("scan", meaning)
        return meaning

    async def _route_in_turn(self, text: str) -> None:
        async with self._in_turn:
            await self.route(text)


# -- the panel ------------------------------------------------------------------------------

class LedSink(Protocol):
    """What shows the LEDs: :class:`hw.panel.Panel` does."""

    def set_led(self, name: LedName, pattern: LedPattern) -> None: ...


def led_patterns(*, mode: str, latched: bool, uplink: str, power: str,
                 alerts: Collection[str]) -> dict[LedName, LedPattern]:
    """The LED patterns for the kit's state.

    - ``mode``: blink_fast while an alert waits for staff, else blink_slow while the staff
      latch holds the kit offline, on when online, off when offline for the uplink.
    - ``uplink``: on when connected, off when there is none, blink_slow while connecting.
    - ``power`` (NUT flags): blink_fast on low battery or forced shutdown (``LB``, ``FSD``),
      blink_slow on battery (``OB``), on on mains (``OL``), off while unknown.

    >>> led_patterns(mode="offline", latched=True, uplink="connecting", power="OB DISCHRG",
    ...              alerts=[])
    {'mode': 'blink_slow', 'uplink': 'blink_slow', 'power': 'blink_slow'}
    """
    flags = set(power.split())
    mode_led: LedPattern = ("blink_fast" if alerts else "blink_slow" if latched
                            else "on" if mode == "online" else "off")
    power_led: LedPattern = ("blink_fast" if flags & {"LB", "FSD"} else "blink_slow"
                             if "OB" in flags else "on" if "OL" in flags else "off")
    return {"mode": mode_led, "uplink": UPLINK_LED.get(uplink, "blink_slow"), "power": power_led}


class PanelController:
    """What the panel's buttons do, and what its LEDs show.

    - offline press: ``set_latch(not latched())``, the staff latch toggled;
    - reprint press: ``request_reprint_last()``;
    - long press: ``request_shutdown()``.

    :meth:`handle` is the :class:`hw.panel.Panel`'s ``on_event``; the actions run one at a
    time, in press order (two quick offline presses toggle twice). Each runs through ``spawn`` (the
    supervisor's short jobs), so a failing action is logged and shows as a degraded part.
    """

    def __init__(self, *, set_latch: Callable[[bool], Awaitable[object]],
                 latched: Callable[[], bool],
                 request_reprint_last: Callable[[], Awaitable[object]],
                 request_shutdown: Callable[[], Awaitable[object]],
                 spawn: Callable[[Coroutine[Any, Any, object]], object]) -> None:
        self.set_latch, self.latched, self.spawn = set_latch, latched, spawn
        self._actions: dict[str, Callable[[], Awaitable[object]]] = {
            "offline_pressed": self._toggle_latch,
            "reprint_pressed": request_reprint_last,
            "shutdown_requested": request_shutdown,
        }
        self._in_turn = asyncio.Lock()
        self._leds: LedSink | None = None
        self.patterns: dict[LedName, LedPattern] = {"mode": "off", "uplink": "off",
                                                    "power": "off"}

    def handle(self, event: PanelEvent) -> None:
        self.spawn(self._act_in_turn(str(event.fact)))

    def attach(self, leds: LedSink) -> None:
        """Show the LEDs on ``leds`` (the panel), from now on and as they are now."""
        self._leds = leds
        self._apply()

    def show(self, *, mode: str, uplink: str, power: str,
             alerts: Collection[str] = ()) -> dict[LedName, LedPattern]:
        """Set the LEDs for the kit's state (see :func:`led_patterns`); returns the patterns."""
        self.patterns = led_patterns(mode=mode, latched=self.latched(), uplink=uplink,
                                     power=power, alerts=alerts)
        self._apply()
        return self.patterns

    def _apply(self) -> None:
        if self._leds is not None:
            for name, pattern in self.patterns.items():
                self._leds.set_led(name, pattern)

    async def _toggle_latch(self) -> None:
        await self.set_latch(not self.latched())

    async def _act_in_turn(self, fact: str) -> None:
        async with self._in_turn:
            log.info("panel: %s", fact)
            await self._actions[fact]()


# -- dropkit sim ----------------------------------------------------------------------------

class SimulatedDevices:
    """The kit's devices for ``dropkit sim``, with the controls of the staff page's simulator.

    - a :class:`simulators.printer.PrinterSimulator` on 127.0.0.1 (``printer_port``, 0 for a
      free one) writing each receipt as ``receipt-<n>.txt`` and ``.png`` into
      ``<state_dir>/printer/`` (numbered from 1 again at each start);
    - gpiozero's ``MockFactory`` for the panel (:attr:`pin_factory`, :attr:`panel_pins`);
    - a :class:`simulators.scanner.FakeInputDevice` for :class:`hw.scanner.ScannerWatcher`
      (``discover=devices.discover_scanners``).

    Build the real parts on them: ``PrintQueue(..., devices.printer_config(config.printer))``,
    ``Panel(loop, controller.handle, devices.panel_pins, long_press=long_press_s,
    pin_factory=devices.pin_factory)``. Use the controls on the event loop's thread.
    """

    BUTTONS: Mapping[str, str] = {"offline": "offline_button", "reprint": "reprint_button",
                                  "shutdown": "shutdown_button"}

    def __init__(self, state_dir: Path, *, printer_port: int = 0, paper_width_mm: int = 80,
                 panel_pins: Mapping[str, PinName | None] | None = None,
                 long_press_s: float = 3.0) -> None:
        self.output_dir = Path(state_dir) / "printer"
        self.long_press_s = long_press_s
        self._printer_port, self._paper_width_mm = printer_port, paper_width_mm
        self._panel_pins = panel_pins or {}
        self._printer_faults: dict[str, Any] = {"paper": "ok", "cover_open": False,
                                                "silent": False}

    def start(self) -> SimulatedDevices:
        from gpiozero.pins.mock import MockFactory

        from hw.panel import DEFAULT_PANEL_PINS
        from simulators.printer import PrinterSimulator
        from simulators.scanner import FakeInputDevice

        self.printer: PrinterSimulator = PrinterSimulator(
            port=self._printer_port, paper_width_mm=self._paper_width_mm,
            output_dir=self.output_dir).start()
        self.pin_factory: MockFactory = MockFactory()
        self.panel_pins: dict[str, PinName | None] = {**DEFAULT_PANEL_PINS, **self._panel_pins}
        self.scanner: FakeInputDevice = FakeInputDevice("Simulated Barcode Scanner",
                                                        "/dev/input/dropkit-sim")
        log.info("simulated printer on 127.0.0.1:%d, receipts in %s", self.printer.port,
                 self.output_dir)
        return self

    def stop(self) -> None:
        """Stop the printer and release the pins (close the panel first)."""
        self.printer.stop()
        self.pin_factory.close()

    def printer_config(self, base: PrintingConfig) -> PrintingConfig:
        """``base`` pointed at the simulated printer."""
        return dataclasses.replace(base, enabled=True, kind="network", host=self.printer.host,
                                   port=self.printer.port, width_mm=self._paper_width_mm)

    def discover_scanners(self) -> list[FakeInputDevice]:
        return [self.scanner]

    def scan(self, text: str) -> None:
        """Scan a barcode; ValueError when the scanner's layout cannot type it."""
        from simulators.scanner import VirtualScanner

        self.scanner.send(VirtualScanner(start=time.time()).scan(text))

    def press(self, button: str) -> None:
        """Press and release ``offline``, ``reprint`` or ``shutdown``."""
        pin = self._button_pin(button)
        pin.drive_low()
        pin.drive_high()

    async def long_press(self, button: str) -> None:
        """Hold a button past the panel's long press, then release it."""
        pin = self._button_pin(button)
        pin.drive_low()
        try:
            await asyncio.sleep(self.long_press_s + LONG_PRESS_MARGIN_S)
        finally:
            pin.drive_high()

    def set_paper(self, level: PaperState) -> None:
        """``ok``, ``near_end`` or ``out`` (ValueError otherwise)."""
        self.printer.set_paper(level)
        self._printer_faults["paper"] = level

    def set_printer_silent(self, silent: bool) -> None:
        self.printer.set_silent(silent)
        self._printer_faults["silent"] = silent

    def set_cover_open(self, cover_open: bool) -> None:
        self.printer.set_cover_open(cover_open)
        self._printer_faults["cover_open"] = cover_open

    def state(self) -> dict[str, Any]:
        """What the simulator controls show: printer faults and output, scanner, buttons."""
        return {"printer": {"port": self.printer.port, **self._printer_faults,
                            "printed": len(self.printer.receipts),
                            "output_dir": str(self.output_dir)},
                "scanner": self.scanner.name,
                "buttons": [name for name, key in self.BUTTONS.items()
                            if self.panel_pins[key] is not None]}

    def _button_pin(self, button: str) -> MockPin:
        key = self.BUTTONS.get(button)
        if key is None:
            raise ValueError(f"unknown button {button!r}; expected one of "
                             f"{', '.join(self.BUTTONS)}")
        pin = self.panel_pins[key]
        if pin is None:
            raise ValueError(f"the {button} button is not fitted")
        return self.pin_factory.pin(pin)
