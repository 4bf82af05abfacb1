"""The kit's panel over gpiozero: buttons report facts, LEDs show what the agent tells them.

Buttons are wired between a GPIO and ground (gpiozero's default pull-up): pressed reads low.

- The offline button reports ``offline_pressed``; the agent decides what a press toggles.
- The reprint button reports ``reprint_pressed``.
- A long press (3 s by default) reports ``shutdown_requested``: on a dedicated shutdown button if
  one is wired, otherwise on the offline button. A button that carries both a press and a long
  press reports the press on release, and only when it was released before the long press.
- LEDs ``mode``, ``uplink`` and ``power`` are set to ``on``, ``off``, ``blink_slow`` or
  ``blink_fast``.

gpiozero calls back on its own threads; the panel hands each :class:`PanelEvent` to the asyncio
loop with ``loop.call_soon_threadsafe``. Example with gpiozero's mock pins::

    import asyncio
    from gpiozero.pins.mock import MockFactory
    from hw.panel import Panel

    async def main() -> None:
        factory = MockFactory()
        events = asyncio.Queue()
        with Panel(asyncio.get_running_loop(), events.put_nowait, pin_factory=factory) as panel:
            factory.pin(17).drive_low()   # offline button down ...
            factory.pin(17).drive_high()  # ... and up before the long press
            print(await events.get())     # PanelEvent(fact=<PanelFact.OFFLINE_PRESSED: ...>, ...)
            panel.set_led("uplink", "blink_fast")

    asyncio.run(main())

Close the panel before its loop; gpiozero threads must not call into a closed loop.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Literal, get_args

from gpiozero import LED, Button
from gpiozero.pins import Factory

PinName = int | str
LedName = Literal["mode", "uplink", "power"]
LedPattern = Literal["on", "off", "blink_slow", "blink_fast"]
LED_NAMES: tuple[LedName, ...] = get_args(LedName)
LED_PATTERNS: tuple[LedPattern, ...] = get_args(LedPattern)

DEFAULT_PANEL_PINS: Mapping[str, PinName | None] = {
    "offline_button": 17,
    "reprint_button": 27,
    "shutdown_button": None,
    "mode_led": 22,
    "uplink_led": 23,
    "power_led": 24,
}
"""BCM pin numbers (or gpiozero pin names); None: not fitted. The offline button is required."""

BLINK_TIMES: Mapping[LedPattern, tuple[float, float]] = {
    "blink_slow": (1.0, 1.0),
    "blink_fast": (0.15, 0.15),
}
"""Seconds on and off for each blink pattern."""


class PanelFact(enum.StrEnum):
    """What a button reports."""

    OFFLINE_PRESSED = "offline_pressed"
    REPRINT_PRESSED = "reprint_pressed"
    SHUTDOWN_REQUESTED = "shutdown_requested"


@dataclass(frozen=True)
class PanelEvent:
    """A button fact and when it happened (wall clock, seconds)."""

    fact: PanelFact
    ts: float


class Panel:
    """Panel buttons and LEDs; facts go to ``on_event`` on ``loop``.

    ``pins`` overrides :data:`DEFAULT_PANEL_PINS` key by key; an unknown key is a ValueError.
    ``pin_factory`` is gpiozero's (None: the default factory, real pins on a Pi).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[PanelEvent], object],
        pins: Mapping[str, PinName | None] = DEFAULT_PANEL_PINS,
        *,
        long_press: float = 3.0,
        bounce_time: float | None = 0.05,
        pin_factory: Factory | None = None,
    ) -> None:
        unknown = set(pins) - set(DEFAULT_PANEL_PINS)
        if unknown:
            raise ValueError(
                f"unknown panel pins {sorted(unknown)}; expected {sorted(DEFAULT_PANEL_PINS)}"
            )
        wiring = {**DEFAULT_PANEL_PINS, **pins}
        if wiring["offline_button"] is None:
            raise ValueError("the panel needs an offline_button pin")
        self._loop = loop
        self._on_event = on_event
        self._long_press = long_press
        self._bounce_time = bounce_time
        self._pin_factory = pin_factory
        self._buttons: list[Button] = []
        self._leds: dict[str, LED] = {}
        self._patterns: dict[str, LedPattern] = {}
        try:
            self._wire_buttons(wiring)
            for name in LED_NAMES:
                pin = wiring[f"{name}_led"]
                if pin is not None:
                    self._leds[name] = LED(pin, pin_factory=pin_factory)
        except Exception:
            self.close()
            raise

    def set_led(self, name: LedName, pattern: LedPattern) -> None:
        """Light, darken or blink an LED; an LED that is not fitted is left alone.

        Setting the pattern an LED already shows changes nothing: a blink goes on undisturbed
        (started again, it would begin with its "on" half each time).
        """
        if name not in LED_NAMES:
            raise ValueError(f"unknown LED {name!r}; expected one of {LED_NAMES}")
        if pattern not in LED_PATTERNS:
            raise ValueError(f"unknown LED pattern {pattern!r}; expected one of {LED_PATTERNS}")
        led = self._leds.get(name)
        if led is None or self._patterns.get(name) == pattern:
            return
        self._patterns[name] = pattern
        if pattern == "on":
            led.on()
        elif pattern == "off":
            led.off()
        else:
            on_time, off_time = BLINK_TIMES[pattern]
            led.blink(on_time=on_time, off_time=off_time)

    def close(self) -> None:
        """Turn the LEDs off and release every pin."""
        for led in self._leds.values():
            led.off()
            led.close()
        for button in self._buttons:
            button.close()
        self._buttons.clear()
        self._leds.clear()
        self._patterns.clear()

    def __enter__(self) -> Panel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wire_buttons(self, wiring: Mapping[str, PinName | None]) -> None:
        shutdown_on_offline = wiring["shutdown_button"] is None
        roles: list[tuple[PinName | None, PanelFact | None, PanelFact | None]] = [
            (
                wiring["offline_button"],
                PanelFact.OFFLINE_PRESSED,
                PanelFact.SHUTDOWN_REQUESTED if shutdown_on_offline else None,
            ),
            (wiring["reprint_button"], PanelFact.REPRINT_PRESSED, None),
            (wiring["shutdown_button"], None, PanelFact.SHUTDOWN_REQUESTED),
        ]
        for pin, press_fact, long_press_fact in roles:
            if pin is not None:
                self._wire_button(pin, press_fact, long_press_fact)

    def _wire_button(
        self, pin: PinName, press_fact: PanelFact | None, long_press_fact: PanelFact | None
    ) -> None:
        button = Button(
            pin,
            bounce_time=self._bounce_time,
            hold_time=self._long_press,
            pin_factory=self._pin_factory,
        )
        self._buttons.append(button)
        held = False

        def on_pressed() -> None:
            nonlocal held
            held = False

        def on_held(fact: PanelFact) -> None:
            nonlocal held
            held = True
            self._report(fact)

        def on_released(fact: PanelFact) -> None:
            if not held:
                self._report(fact)

        if long_press_fact is not None:
            button.when_held = partial(on_held, long_press_fact)
        if press_fact is None:
            return
        if long_press_fact is None:
            button.when_pressed = partial(self._report, press_fact)
        else:
            button.when_pressed = on_pressed
            button.when_released = partial(on_released, press_fact)

    def _report(self, fact: PanelFact) -> None:
        self._loop.call_soon_threadsafe(self._on_event, PanelEvent(fact, time.time()))
