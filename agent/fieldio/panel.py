"""What the panel's buttons do, and what its LEDs show.

:class:`hw.panel.Panel` reports plain facts: a button was pressed, released, or held past the
long press. The agent decides what they mean (:func:`button_action`):

- reprint pressed: reprint the last receipt;
- shutdown held: the orderly shutdown;
- offline: toggles the staff latch. With a shutdown button fitted, at the press. Without one,
  the offline button carries the shutdown too: held, it asks for the shutdown; released before
  the long press, it toggles the latch (so a long press never toggles).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from hw.panel import PanelFact

if TYPE_CHECKING:
    from hw.panel import ButtonName, LedName, LedPattern, PanelEvent

log = logging.getLogger(__name__)

Action = Literal["toggle_latch", "reprint_last", "shutdown"]
UPLINK_LED: Mapping[str, LedPattern] = {"connected": "on", "off": "off"}
"""The uplink LED per uplink state; any other state (connecting, disconnected) blinks slowly."""


class PanelLike(Protocol):
    """What shows the LEDs and knows its buttons: :class:`hw.panel.Panel` does."""

    @property
    def buttons(self) -> frozenset[ButtonName]: ...

    def set_led(self, name: LedName, pattern: LedPattern) -> None: ...


def button_action(button: ButtonName, fact: PanelFact, *, shutdown_button: bool,
                  after_hold: bool) -> Action | None:
    """What a panel fact asks for; None for a fact that means nothing.

    ``shutdown_button``: a shutdown button is fitted. ``after_hold``: this release ends a
    press that was held past the long press.

    >>> button_action("offline", PanelFact.HELD, shutdown_button=False, after_hold=False)
    'shutdown'
    >>> button_action("offline", PanelFact.RELEASED, shutdown_button=False, after_hold=True)
    >>> button_action("offline", PanelFact.PRESSED, shutdown_button=True, after_hold=False)
    'toggle_latch'
    """
    if button == "reprint":
        return "reprint_last" if fact is PanelFact.PRESSED else None
    if button == "shutdown":
        return "shutdown" if fact is PanelFact.HELD else None
    if shutdown_button:
        return "toggle_latch" if fact is PanelFact.PRESSED else None
    if fact is PanelFact.HELD:
        return "shutdown"
    return "toggle_latch" if fact is PanelFact.RELEASED and not after_hold else None


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
    """Acts on the panel's facts (see :func:`button_action`) and sets its LEDs.

    - toggle_latch: ``set_latch(not latched())``, the staff latch toggled;
    - reprint_last: ``request_reprint_last()``;
    - shutdown: ``request_shutdown()``;
    - and every press, whatever it means: ``pressed(button)`` (``dropkit preflight`` watches
      for one of each).

    :meth:`handle` is the :class:`hw.panel.Panel`'s ``on_event``; the actions run one at a
    time, in press order (two quick offline presses toggle twice), each a short job through
    ``spawn`` (the supervisor's), so a failing action is logged and shows as a degraded part.
    Until :meth:`attach` names the panel, no shutdown button is taken to be fitted.
    """

    def __init__(self, *, set_latch: Callable[[bool], Awaitable[object]],
                 latched: Callable[[], bool],
                 request_reprint_last: Callable[[], Awaitable[object]],
                 request_shutdown: Callable[[], Awaitable[object]],
                 spawn: Callable[[Coroutine[Any, Any, object]], object],
                 pressed: Callable[[ButtonName], object] = lambda button: None) -> None:
        self.set_latch, self.latched, self.spawn = set_latch, latched, spawn
        self.pressed = pressed
        self._actions: dict[Action, Callable[[], Awaitable[object]]] = {
            "toggle_latch": self._toggle_latch,
            "reprint_last": request_reprint_last,
            "shutdown": request_shutdown,
        }
        self._in_turn = asyncio.Lock()
        self._panel: PanelLike | None = None
        self._held: set[ButtonName] = set()
        self.patterns: dict[LedName, LedPattern] = {"mode": "off", "uplink": "off",
                                                    "power": "off"}

    def handle(self, event: PanelEvent) -> None:
        """Act on one fact (call it on the event loop, in the order the facts came)."""
        if event.fact is PanelFact.PRESSED:
            self.pressed(event.button)
        after_hold = event.button in self._held
        if event.fact is PanelFact.HELD:
            self._held.add(event.button)
        else:
            self._held.discard(event.button)
        shutdown_button = self._panel is not None and "shutdown" in self._panel.buttons
        action = button_action(event.button, event.fact, shutdown_button=shutdown_button,
                               after_hold=after_hold)
        if action is None:
            return
        self.spawn(self._act_in_turn(f"{event.button} {event.fact}", action))

    def attach(self, panel: PanelLike) -> None:
        """Read the buttons of ``panel`` and show the LEDs on it, from now on and as they are
        now."""
        self._panel = panel
        self._apply()

    def show(self, *, mode: str, uplink: str, power: str,
             alerts: Collection[str] = ()) -> dict[LedName, LedPattern]:
        """Set the LEDs for the kit's state (see :func:`led_patterns`); returns the patterns."""
        self.patterns = led_patterns(mode=mode, latched=self.latched(), uplink=uplink,
                                     power=power, alerts=alerts)
        self._apply()
        return self.patterns

    def _apply(self) -> None:
        if self._panel is not None:
            for name, pattern in self.patterns.items():
                self._panel.set_led(name, pattern)

    async def _toggle_latch(self) -> None:
        await self.set_latch(not self.latched())

    async def _act_in_turn(self, fact: str, action: Action) -> None:
        async with self._in_turn:
            log.info("panel: %s: %s", fact, action)
            await self._actions[action]()
