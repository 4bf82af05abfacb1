"""The kit's field devices for ``dropkit sim``, with the controls of the staff page's simulator.

Hardware only: a simulated receipt printer, gpiozero's mock pins for the panel and a virtual
barcode scanner. The agent builds its real parts on them: its printer config pointed at the
simulated printer's host and port, its panel on the mock pins.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpiozero.pins.mock import MockFactory, MockPin

    from hw.panel import PinName
    from simulators.printer import PaperState, PrinterSimulator
    from simulators.scanner import FakeInputDevice

log = logging.getLogger(__name__)

LONG_PRESS_MARGIN_S = 0.2
"""How much longer than the panel's long press :meth:`SimulatedDevices.long_press` holds."""


class SimulatedDevices:
    """The kit's devices for ``dropkit sim``, with the controls of the staff page's simulator.

    - a :class:`simulators.printer.PrinterSimulator` on 127.0.0.1 (``printer_port``, 0 for a
      free one) with ``paper_width_mm`` paper, writing each receipt as ``receipt-<n>.txt`` and
      ``.png`` into ``<state_dir>/printer/`` (numbered from 1 again at each start);
    - gpiozero's ``MockFactory`` for the panel (:attr:`pin_factory`; ``panel_pins`` is the
      panel's pin map, as :class:`hw.panel.Panel` takes it);
    - a :class:`simulators.scanner.FakeInputDevice` for :class:`hw.scanner.ScannerWatcher`
      (``discover=devices.discover_scanners``).

    Build the real parts on them: a network printer at ``devices.printer.host`` and ``.port``
    with ``devices.paper_width_mm`` paper, ``Panel(loop, controller.handle, devices.panel_pins,
    long_press=long_press_s, pin_factory=devices.pin_factory)``. Use the controls on the event
    loop's thread.
    """

    BUTTONS: Mapping[str, str] = {"offline": "offline_button", "reprint": "reprint_button",
                                  "shutdown": "shutdown_button"}

    def __init__(self, state_dir: Path, *, panel_pins: Mapping[str, PinName | None],
                 long_press_s: float, printer_port: int = 0, paper_width_mm: int = 80) -> None:
        self.output_dir = Path(state_dir) / "printer"
        self.long_press_s = long_press_s
        self.paper_width_mm = paper_width_mm
        self.panel_pins: dict[str, PinName | None] = dict(panel_pins)
        self._printer_port = printer_port
        self._printer_faults: dict[str, Any] = {"paper": "ok", "cover_open": False,
                                                "silent": False}

    def start(self) -> SimulatedDevices:
        from gpiozero.pins.mock import MockFactory

        from simulators.printer import PrinterSimulator
        from simulators.scanner import FakeInputDevice

        self.printer: PrinterSimulator = PrinterSimulator(
            port=self._printer_port, paper_width_mm=self.paper_width_mm,
            output_dir=self.output_dir).start()
        self.pin_factory: MockFactory = MockFactory()
        self.scanner: FakeInputDevice = FakeInputDevice("Simulated Barcode Scanner",
                                                        "/dev/input/dropkit-sim")
        log.info("simulated printer on 127.0.0.1:%d, receipts in %s", self.printer.port,
                 self.output_dir)
        return self

    def stop(self) -> None:
        """Stop the printer and release the pins (close the panel first)."""
        self.printer.stop()
        self.pin_factory.close()

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

    def long_press(self, button: str) -> Coroutine[Any, Any, None]:
        """Hold a button past the panel's long press, then release it: a ValueError now for a
        button that is not there, else the hold to await."""
        pin = self._button_pin(button)

        async def hold() -> None:
            pin.drive_low()
            try:
                await asyncio.sleep(self.long_press_s + LONG_PRESS_MARGIN_S)
            finally:
                pin.drive_high()
        return hold()

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
