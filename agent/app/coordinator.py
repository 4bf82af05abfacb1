"""One coordinator owns the kit's state; health, telemetry, the LEDs and the staff pages read it.

The services push what they know (the power monitor its status, the print queue the printer's
answer, the uplink its connection, the supervisor each part's health) with
:meth:`Coordinator.update`; listeners get the new :class:`KitState` once per change, on the
loop. Nobody asks five objects for their state: ``/api/health`` is :meth:`KitState.health`.

What waits in the outbox is the one value kept in the store: the coordinator reads it again only
when the outbox changed since it last did, and only when someone asks
(:meth:`Coordinator.current`).

    >>> import asyncio
    >>> async def demo():
    ...     async def waiting() -> dict[str, int]:
    ...         return {"sale": 2, "event": 1}
    ...     coordinator = Coordinator("kit-demo", waiting)
    ...     seen = []
    ...     coordinator.listen(lambda new, old: seen.append((new.printer["state"],
    ...                                                      new.queue_depth)))
    ...     coordinator.update(printer={"state": "paper_out"})
    ...     coordinator.update(printer={"state": "paper_out"})     # no change: no call
    ...     await asyncio.sleep(0)
    ...     coordinator.outbox_changed()
    ...     state = await coordinator.current()
    ...     return seen, state.alerts
    >>> asyncio.run(demo())
    ([('paper_out', 0), ('paper_out', 3)], ('printer_paper_out',))
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from agent.app.supervisor import PartHealth

log = logging.getLogger(__name__)

# Printer states that need staff: the page shows an alert; the panel's mode LED blinks for those
# staff fix at the printer itself (paper, cover).
PRINTER_ALERTS = {"paper_out": "printer_paper_out", "cover_open": "printer_cover_open",
                  "offline": "printer_offline", "not_responding": "printer_offline"}
PRINTER_LED_ALERTS = ("printer_paper_out", "printer_cover_open")

# The storage states that need staff; in the first set no order is taken.
STORAGE_ALERTS = {"low": "storage_low", "full": "storage_full", "damaged": "store_damaged",
                  "lost": "store_lost"}
STORAGE_REFUSING = {"full", "damaged", "lost"}


def _frozen(mapping: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class KitState:
    """The kit at one moment. Replace it (:meth:`Coordinator.update`), never change it."""

    kit_id: str
    mode: str = "offline"
    mode_reasons: tuple[str, ...] = ("uplink_off",)
    latched: bool = False
    power: Mapping[str, Any] = field(default_factory=lambda: _frozen({"state": "unknown"}))
    """The power monitor's last status (``PowerStatus.to_dict()``), ``simulated_rig`` too in
    ``dropkit sim``; ``{"state": "unknown"}`` before one or without sensors."""
    printer: Mapping[str, Any] = field(default_factory=lambda: _frozen({"state": "disabled"}))
    scanners: tuple[str, ...] = ()
    """The names of the scanners being read."""
    panel: Mapping[str, Any] = field(default_factory=lambda: _frozen({"state": "disabled"}))
    uplink: Mapping[str, Any] = field(default_factory=lambda: _frozen({"state": "off"}))
    waiting: Mapping[str, int] = field(default_factory=_frozen)
    """The outbox messages not yet relayed, by kind (``sale``, ``void``, ``refund``,
    ``event``)."""
    shutdown_deadline: float | None = None
    """When the power monitor's shutdown countdown ends (``time.monotonic()``); None without
    one. Health counts ``shutdown_in_s`` down from it, whenever it is asked."""
    manifest: Mapping[str, Any] = field(
        default_factory=lambda: _frozen({"version": None, "hash": None, "conflict": None}))
    """What the kit sells (from the store), and the configured file's ``conflict`` while it is
    refused (:func:`agent.core.manifest.file_conflict`)."""
    parts: Mapping[str, PartHealth] = field(default_factory=_frozen)
    storage: Mapping[str, Any] = field(default_factory=lambda: _frozen({"state": "ok"}))
    """The storage watch's view (:mod:`agent.app.storage`): ``state`` ``ok``, ``low``,
    ``full``, ``damaged`` or ``lost``, ``free_mb``, ``warn_mb``, ``detail``."""
    refusal: str = ""
    """Why new orders are refused (the shutdown has begun); empty while they are taken."""

    @property
    def queue_depth(self) -> int:
        """The outbox messages not yet relayed (events included)."""
        return sum(self.waiting.values())

    @property
    def power_state(self) -> str:
        """The NUT flags (``"OL CHRG"``), ``unknown`` before the first status."""
        return str(self.power.get("state", "unknown"))

    @property
    def degraded(self) -> dict[str, str]:
        """The supervised parts that are degraded, and why; ``storage`` while the store takes
        no writes."""
        degraded = {name: part.reason for name, part in self.parts.items()
                    if part.state == "degraded"}
        if self.storage.get("state") in STORAGE_REFUSING:
            degraded["storage"] = f"store {self.storage['state']}: {self.storage.get('detail')}"
        return degraded

    @property
    def alerts(self) -> tuple[str, ...]:
        """What waits for staff: a printer that cannot print, a faulted power sensor, storage
        low or full or a store lost, a manifest file refused for a conflict, the shutdown's
        countdown running, a part that is degraded."""
        alerts = []
        if (printer := PRINTER_ALERTS.get(str(self.printer.get("state")))) is not None:
            alerts.append(printer)
        alerts += [f"power_sensor_{name}" for name in self.power.get("sensor_faults") or ()]
        if (storage := STORAGE_ALERTS.get(str(self.storage.get("state")))) is not None:
            alerts.append(storage)
        if self.manifest.get("conflict"):
            alerts.append("manifest_conflict")
        if self.shutdown_deadline is not None and not self.refusal:
            alerts.append("shutdown_pending")
        alerts += [f"degraded_{name}" for name in self.degraded if name != "storage"]
        return tuple(alerts)

    @property
    def led_alerts(self) -> tuple[str, ...]:
        """The alerts the panel's mode LED blinks for: paper or cover, and degraded parts."""
        return tuple(alert for alert in self.alerts
                     if alert in PRINTER_LED_ALERTS or alert.startswith("degraded_"))

    @property
    def status(self) -> str:
        """``stopping`` once the shutdown began, ``degraded`` while a part is, else ``ready``."""
        return "stopping" if self.refusal else "degraded" if self.degraded else "ready"

    def health(self, **extra: Any) -> dict[str, Any]:
        """The ``/api/health`` body (``extra``: what the daemon adds, version and uptime)."""
        return {
            "kit_id": self.kit_id,
            **extra,
            "status": self.status,
            "degraded": self.degraded,
            "alerts": list(self.alerts),
            "mode": self.mode,
            "mode_reasons": list(self.mode_reasons),
            "staff_latch": self.latched,
            "uplink": dict(self.uplink),
            "queue_depth": self.queue_depth,
            "waiting": {kind: self.waiting.get(kind, 0) for kind in ("sale", "void", "refund")},
            "power": self.power_now(),
            "devices": {"printer": dict(self.printer),
                        "scanners": list(self.scanners),
                        "panel": dict(self.panel)},
            "manifest": dict(self.manifest),
            "storage": dict(self.storage),
            "parts": {name: part.to_dict() for name, part in self.parts.items()},
        }


    def power_now(self) -> dict[str, Any]:
        """The power status with the shutdown's countdown as it stands now: ``shutdown_in_s``
        (the status's own is as old as its sample) and ``shutdown_at`` (UTC), both None
        without a countdown."""
        power = dict(self.power)
        if self.shutdown_deadline is None:
            power["shutdown_at"] = None
            return power
        left_s = max(0.0, self.shutdown_deadline - time.monotonic())
        power["shutdown_in_s"] = round(left_s, 1)
        power["shutdown_at"] = (datetime.now(UTC) + timedelta(seconds=left_s)).isoformat(
            timespec="milliseconds")
        return power


Listener = Callable[[KitState, KitState], object]
"""Called with the new state and the one before it."""


class Coordinator:
    """Holds the :class:`KitState` and tells listeners when it changes."""

    def __init__(self, kit_id: str,
                 read_waiting: Callable[[], Awaitable[Mapping[str, int]]]) -> None:
        self.state = KitState(kit_id)
        self.started = time.monotonic()
        self._read_waiting = read_waiting
        self._depth_stale = True
        self._depth_lock = asyncio.Lock()
        self._listeners: list[Listener] = []

    def listen(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def update(self, **changes: Any) -> KitState:
        """Replace the named fields; listeners hear of it when anything changed."""
        before = self.state
        if "power" in changes and changes["power"] != before.power:
            # The monitor's shutdown_in_s is counted from this moment (it reports at once).
            in_s = changes["power"].get("shutdown_in_s")
            changes["shutdown_deadline"] = None if in_s is None else time.monotonic() + in_s
        for name in ("power", "printer", "panel", "uplink", "manifest", "parts", "storage",
                     "waiting"):
            if name in changes:
                changes[name] = _frozen(changes[name])
        for name in ("scanners", "mode_reasons"):
            if name in changes:
                changes[name] = tuple(changes[name])
        after = dataclasses.replace(before, **changes)
        if after == before:
            return before
        self.state = after
        for listener in self._listeners:
            try:
                listener(after, before)
            except Exception:
                log.exception("kit state listener %r failed", listener)
        return after

    def set_part(self, name: str, health: PartHealth) -> None:
        """The supervisor's listener: one part's health."""
        self.update(parts={**self.state.parts, name: health})

    def outbox_changed(self) -> None:
        """Something was added to or relayed from the outbox: what waits is read again when
        next asked."""
        self._depth_stale = True

    async def current(self) -> KitState:
        """The state with what waits in the outbox as the store has it now."""
        async with self._depth_lock:
            if self._depth_stale:
                self._depth_stale = False
                try:
                    waiting = await self._read_waiting()
                except Exception:
                    self._depth_stale = True
                    raise
                self.update(waiting=waiting)
        return self.state
