"""The kit's panel over gpiozero: buttons report facts, LEDs show what the agent tells them.

Buttons are wired between a GPIO and ground (gpiozero's default pull-up): pressed reads low.
Each fitted button (``offline``, ``reprint``, ``shutdown``) reports what happened to it, and
nothing about what it means (that is :mod:`agent.fieldio.panel`'s call):

- ``pressed``: the button went down;
- ``held``: it is still down after the long press (``long_press`` seconds), once per press;
- ``released``: it came up.

LEDs ``mode``, ``uplink`` and ``power`` are set to ``on``, ``off``, ``blink_slow`` or
``blink_fast``.

gpiozero calls back on its own threads; the panel hands each :class:`PanelEvent` to the asyncio
loop with ``loop.call_soon_threadsafe``, in the order they happened. gpiozero is imported when
a panel is made. Example with gpiozero's mock pins::

    import asyncio
    from gpiozero.pins.mock import MockFactory
    from hw.panel import Panel

    PINS = {"offline_button": 17, "reprint_button": 27, "shutdown_button": None,
            "mode_led": 22, "uplink_led": 23, "power_led": 24}

    async def main() -> None:
        factory = MockFactory()
        events = asyncio.Queue()
        with Panel(asyncio.get_running_loop(), events.put_nowait, PINS, long_press=3.0,
                   pin_factory=factory) as panel:
            factory.pin(17).drive_low()   # offline button down ...
            print(await events.get())     # PanelEvent(button='offline', fact=...PRESSED...)
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
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from gpiozero import LED, Button
    from gpiozero.pins import Factory

PinName = int | str
ButtonName = Literal["offline", "reprint", "shutdown"]
LedName = Literal["mode", "uplink", "power"]
LedPattern = Literal["on", "off", "blink_slow", "blink_fast"]
BUTTON_NAMES: tuple[ButtonName, ...] = get_args(ButtonName)
LED_NAMES: tuple[LedName, ...] = get_args(LedName)
LED_PATTERNS: tuple[LedPattern, ...] = get_args(LedPattern)
PIN_KEYS: tuple[str, ...] = (*(f"{name}_button" for name in BUTTON_NAMES),
                             *(f"{name}_led" for name in LED_NAMES))
"""The keys of a panel's pin map: ``<button>_button`` and ``<led>_led``."""

BLINK_TIMES: Mapping[LedPattern, tuple[float, float]] = {
    "blink_slow": (1.0, 1.0),
    "blink_fast": (0.15, 0.15),
}
"""Seconds on and off for each blink pattern."""


class PanelFact(enum.StrEnum):
    """What happened to a button."""

    PRESSED = "pressed"
    HELD = "held"
    RELEASED = "released"


@dataclass(frozen=True)
class PanelEvent:
    """A button, what happened to it, and when (wall clock, seconds)."""

    button: ButtonName
    fact: PanelFact
    ts: float


class Panel:
    """Panel buttons and LEDs; facts go to ``on_event`` on ``loop``.

    ``pins`` maps every key of :data:`PIN_KEYS` to a BCM pin number (or gpiozero pin name), None
    for not fitted; a missing or unknown key is a ValueError, and so is a panel without an
    offline button. ``long_press``: seconds down before a button reports ``held``.
    ``pin_factory`` is gpiozero's (None: the default factory, real pins on a Pi).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_event: Callable[[PanelEvent], object],
        pins: Mapping[str, PinName | None],
        *,
        long_press: float,
        bounce_time: float | None = 0.05,
        pin_factory: Factory | None = None,
    ) -> None:
        from gpiozero import LED

        unknown, missing = set(pins) - set(PIN_KEYS), set(PIN_KEYS) - set(pins)
        if unknown or missing:
            raise ValueError(f"unknown panel pins {sorted(unknown)}, missing {sorted(missing)}; "
                             f"expected {sorted(PIN_KEYS)}")
        if pins["offline_button"] is None:
            raise ValueError("the panel needs an offline_button pin")
        self._loop = loop
        self._on_event = on_event
        self._long_press = long_press
        self._bounce_time = bounce_time
        self._pin_factory = pin_factory
        self._buttons: dict[ButtonName, Button] = {}
        self._leds: dict[str, LED] = {}
        self._patterns: dict[str, LedPattern] = {}
        try:
            for button in BUTTON_NAMES:
                if (pin := pins[f"{button}_button"]) is not None:
                    self._wire_button(button, pin)
            for name in LED_NAMES:
                pin = pins[f"{name}_led"]
                if pin is not None:
                    self._leds[name] = LED(pin, pin_factory=pin_factory)
        except Exception:
            self.close()
            raise

    @property
    def buttons(self) -> frozenset[ButtonName]:
        """The buttons that are fitted."""
        return frozenset(self._buttons)

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
        for button in self._buttons.values():
            button.close()
        self._buttons.clear()
        self._leds.clear()
        self._patterns.clear()

    def __enter__(self) -> Panel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _wire_button(self, name: ButtonName, pin: PinName) -> None:
        from gpiozero import Button

        button = Button(
            pin,
            bounce_time=self._bounce_time,
            hold_time=self._long_press,
            pin_factory=self._pin_factory,
        )
        self._buttons[name] = button
        button.when_pressed = lambda: self._report(name, PanelFact.PRESSED)
        button.when_held = lambda: self._report(name, PanelFact.HELD)
        button.when_released = lambda: self._report(name, PanelFact.RELEASED)

    def _report(self, button: ButtonName, fact: PanelFact) -> None:
        self._loop.call_soon_threadsafe(self._on_event, PanelEvent(button, fact, time.time()))
