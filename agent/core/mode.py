"""Online or offline: the staff latch and the uplink's health decide which.

Offline, orders are confirmed from local stock alone. The staff latch (the panel's offline button
or the staff endpoint) forces offline until released, and survives a restart: staff who pressed
it expect it still pressed after a power cut.

    >>> mode = Mode()
    >>> mode.state, mode.reasons
    ('offline', ['uplink_off'])
    >>> mode.on_change(lambda state, reasons: print("now", state, reasons))
    >>> mode.set_uplink_healthy(False)
    now offline ['uplink_unhealthy']
    >>> mode.set_uplink_healthy(True); mode.state
    now online []
    'online'
    >>> mode.set_latch(True); mode.state, mode.reasons
    now offline ['staff_latch']
    ('offline', ['staff_latch'])
"""

from __future__ import annotations

from collections.abc import Callable

Listener = Callable[[str, list[str]], None]


class Mode:
    def __init__(self, latched: bool = False, uplink_configured: bool = False) -> None:
        self.latched = latched
        self.uplink_configured = uplink_configured
        self.uplink_healthy = False
        self._listeners: list[Listener] = []

    @property
    def reasons(self) -> list[str]:
        """Why the kit is offline; empty when it is online."""
        reasons = []
        if self.latched:
            reasons.append("staff_latch")
        if not self.uplink_configured:
            reasons.append("uplink_off")
        elif not self.uplink_healthy:
            reasons.append("uplink_unhealthy")
        return reasons

    @property
    def state(self) -> str:
        return "offline" if self.reasons else "online"

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def set_latch(self, latched: bool) -> None:
        self._update(lambda: setattr(self, "latched", latched))

    def set_uplink_healthy(self, healthy: bool) -> None:
        def change() -> None:
            self.uplink_configured, self.uplink_healthy = True, healthy
        self._update(change)

    def _update(self, change: Callable[[], None]) -> None:
        before = (self.state, self.reasons)
        change()
        if (self.state, self.reasons) != before:
            for listener in self._listeners:
                listener(self.state, self.reasons)
