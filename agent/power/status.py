"""What the monitor knows, as the ``telemetry/power`` payload: NUT flags, sources, the cell.

The payload's contract is ``agent/schemas/telemetry-power.schema.json``
(``agent.schemas.load("telemetry-power")``), which also names the keys the daemon adds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from agent.power.sensors import SensorName
    from hw.power.current import PowerReading
    from hw.power.max17048 import GaugeReading

NUT_FLAGS = ("FSD", "OL", "OB", "CHRG", "DISCHRG", "LB")
"""The flags of ``state``, in the order they are written (FSD first, as upsd writes it)."""
UNKNOWN_STATE = "unknown"
"""``state`` before any flag is known (no sensor has answered yet)."""
RATE_DEADBAND_PERCENT_PER_HOUR = 0.5
"""Gauge rate within ± this is neither charging nor discharging."""


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(frozen=True)
class SourceStatus:
    """One power input as last read. ``present``: this reading is above the presence volts."""

    present: bool | None = None
    volts: float | None = None
    amps: float | None = None
    watts: float | None = None

    @classmethod
    def of(cls, reading: PowerReading | None, present_volts: float) -> SourceStatus:
        if reading is None:
            return cls()
        return cls(reading.volts >= present_volts, reading.volts, reading.amps, reading.watts)

    def to_dict(self) -> dict[str, Any]:
        return {"present": self.present, "volts": _rounded(self.volts, 3),
                "amps": _rounded(self.amps, 3), "watts": _rounded(self.watts, 3)}


def minutes_left(percent: float, rate_percent_per_hour: float) -> float | None:
    """Minutes until empty at the present discharge rate; None unless discharging.

    >>> minutes_left(50.0, -100.0), minutes_left(50.0, 12.0)
    (30.0, None)
    """
    if rate_percent_per_hour > -RATE_DEADBAND_PERCENT_PER_HOUR:
        return None
    return percent / -rate_percent_per_hour * 60


@dataclass(frozen=True)
class UpsStatus:
    """The cell, from the fuel gauge; None where unknown."""

    percent: float | None = None
    volts: float | None = None
    rate_percent_per_hour: float | None = None
    minutes_left: float | None = None

    @classmethod
    def of(cls, reading: GaugeReading | None) -> UpsStatus:
        if reading is None:
            return cls()
        return cls(reading.percent, reading.cell_volts, reading.rate_percent_per_hour,
                   minutes_left(reading.percent, reading.rate_percent_per_hour))

    def to_dict(self) -> dict[str, Any]:
        return {"percent": _rounded(self.percent, 2), "volts": _rounded(self.volts, 3),
                "rate_percent_per_hour": _rounded(self.rate_percent_per_hour, 2),
                "minutes_left": _rounded(self.minutes_left, 1)}


@dataclass(frozen=True)
class PowerStatus:
    """What the monitor knows at one moment; :meth:`to_dict` is the ``telemetry/power`` payload.

    ``state`` holds NUT flags separated by spaces (``"OL CHRG"``, ``"OB DISCHRG"``,
    ``"FSD OB DISCHRG LB"``: ``LB`` only once the kit is shutting down for its battery);
    ``"unknown"`` while nothing is known. ``feeding`` is the source that feeds the kit,
    debounced. ``battery_level`` is the warning before that: ``ok``, ``low`` or ``critical``,
    held; None until known. ``ts`` is ISO 8601 UTC; ``seq`` counts statuses from 1.
    """

    state: str
    feeding: Literal["mains", "battery"] | None
    mains: SourceStatus
    battery: SourceStatus
    ups: UpsStatus
    sensor_faults: tuple[SensorName, ...]
    shutdown_in_s: float | None
    ts: str
    seq: int
    battery_level: str | None = None
    """``ok``, ``low`` or ``critical``; None until known."""

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(self.state.split()) - {UNKNOWN_STATE}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ts": self.ts,
            "seq": self.seq,
            "state": self.state,
            "feeding": self.feeding,
            "sources": {"mains": self.mains.to_dict(), "battery": self.battery.to_dict()},
            "ups": self.ups.to_dict(),
            "battery_level": self.battery_level,
            "sensor_faults": list(self.sensor_faults),
            "shutdown_in_s": _rounded(self.shutdown_in_s, 1),
        }
