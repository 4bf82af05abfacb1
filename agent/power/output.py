"""What the power monitor says: its NUT flags, the ``telemetry/power`` status and its events.

:class:`MonitorOutput` is the side of :class:`~agent.power.monitor.PowerMonitor` that turns the
state the monitor keeps (the debounced mains, the battery's judgement, each sensor's last
reading, the shutdown policy) into a :class:`~agent.power.status.PowerStatus` and event dicts,
and hands them to the daemon's callbacks, which never stop the monitor when they fail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.core.clock import now_iso
from agent.power.status import (
    RATE_DEADBAND_PERCENT_PER_HOUR,
    UNKNOWN_STATE,
    PowerStatus,
    SourceStatus,
    UpsStatus,
)

if TYPE_CHECKING:
    from agent.config import PowerConfig
    from agent.power.debounce import Debounced
    from agent.power.judgement import BatteryJudge
    from agent.power.policy import ShutdownPolicy
    from agent.power.sensors import SensorName, TrackedSensor

log = logging.getLogger("agent.power.monitor")  # one monitor, one logger, as before the split

PowerEvent = dict[str, Any]

CURRENT_DEADBAND_AMPS = 0.05
"""Battery current within ± this is neither charging nor discharging."""


class MonitorOutput:
    """The monitor's status and events; :class:`~agent.power.monitor.PowerMonitor` keeps the
    state below."""

    config: PowerConfig
    policy: ShutdownPolicy
    status: PowerStatus | None
    _sensors: dict[SensorName, TrackedSensor]
    _mains: Debounced[bool]
    _battery: BatteryJudge
    _on_status: Callable[[PowerStatus], object]
    _on_event: Callable[[PowerEvent], object]
    _principal: str
    _seq: int
    _fsd: bool
    _low_battery: bool

    def _discharging(self) -> bool | None:
        """Whether the battery is discharging (False: charging; None: idle or unknown)."""
        battery, gauge = self._sensors.get("battery"), self._sensors.get("gauge")
        if battery is not None and battery.reading is not None:
            amps = battery.reading.amps
            if abs(amps) > CURRENT_DEADBAND_AMPS:
                return amps > 0
        believed = self._battery.trust.trusted
        if gauge is not None and gauge.reading is not None and believed is not None:
            rate = believed.rate_percent_per_hour
            if abs(rate) > RATE_DEADBAND_PERCENT_PER_HOUR:
                return rate < 0
        return None


    def _state_flags(self) -> list[str]:
        flags = ["FSD"] if self._fsd else []
        if self._mains.value is not None:
            flags.append("OL" if self._mains.value else "OB")
        discharging = True if self._mains.value is False else self._discharging()
        if discharging is not None:
            flags.append("DISCHRG" if discharging else "CHRG")
        if self._low_battery:
            flags.append("LB")
        return flags

    def _publish(self, now: float, *, force: bool) -> PowerStatus | None:
        """Emit a power event if OL/OB, LB or FSD changed; the status then, or when forced."""
        flags = self._state_flags()
        state = " ".join(flags) or UNKNOWN_STATE
        principal = " ".join(flag for flag in flags if flag not in ("CHRG", "DISCHRG"))
        if principal != self._principal:
            log.info("power %s -> %s", self._principal or UNKNOWN_STATE, principal)
            self._emit({"type": "power", "from": self._principal or None, "to": principal,
                        "state": state})
            self._principal = principal
        elif not force:
            return None
        sensors = self._sensors

        def last(name: SensorName) -> Any:
            return sensors[name].reading if name in sensors else None

        self._seq += 1
        status = PowerStatus(
            state=state,
            feeding=None if self._mains.value is None else (
                "mains" if self._mains.value else "battery"),
            mains=SourceStatus.of(last("mains"), self.config.mains_present_volts),
            battery=SourceStatus.of(last("battery"), self.config.battery_present_volts),
            ups=UpsStatus.of(self._battery.trust.trusted if "gauge" in sensors
                             and sensors["gauge"].reading is not None else None),
            battery_level=self._battery.level,
            sensor_faults=tuple(name for name, sensor in sensors.items()
                                if sensor.faulted_since is not None),
            shutdown_in_s=(0.0 if self._fsd else None if self.policy.commit_at is None
                           else max(0.0, self.policy.commit_at - now)),
            ts=now_iso(),
            seq=self._seq,
        )
        self.status = status
        self._call(self._on_status, status)
        return status

    def _emit(self, event: PowerEvent) -> None:
        self._call(self._on_event, {**event, "ts": now_iso()})

    @staticmethod
    def _call(callback: Callable[[Any], object], value: object) -> None:
        try:
            callback(value)
        except Exception:
            log.exception("power callback %r failed", callback)
