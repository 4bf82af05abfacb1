"""The power monitor as the daemon runs it, and the shutdown steps it performs on the kit.

:mod:`agent.power` holds the policy (states, thresholds, the sequence); this module gives it the
kit's real sensors (or the simulated rig in ``dropkit sim``) and hands what it reports to the
kit through a :class:`PowerOutputs`. The shutdown steps themselves (stop taking orders, flush
the outbox, the last telemetry, close the store) are the kit's, given as
:class:`agent.power.shutdown.ShutdownSteps`. docs/power.md describes the sequence.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.config import PowerConfig
from agent.power.monitor import PowerMonitor
from agent.power.sensors import LazySMBus, build_sensors
from agent.power.shutdown import ShutdownSteps

if TYPE_CHECKING:
    from pathlib import Path

    from agent.power.status import PowerStatus
    from simulators.live_power import SimulatedPower

log = logging.getLogger(__name__)

# Events that are alerts on the staff page (all power events reach remote ops).
ALERTS = {"sensor_fault", "shutdown_pending", "shutdown"}
# dropkit sim must never power off the laptop it runs on: unless the config names another
# command (a drill's recorder), the simulated kit's power-off does nothing.
SIM_SHUTDOWN_COMMAND = "true"
RIG_FILE_NAME = "sim-power.json"
"""``dropkit sim``: the simulated rig over a restart, in the state directory (the power-cut
drill's HAT, simulators/power_hat.py, cuts and restores the kit's power there)."""


@dataclass(frozen=True)
class PowerOutputs:
    """Where the power service reports, each called on the loop.

    - ``status(health)``: the monitor's status as ``/api/health`` shows it;
    - ``publish(kind, data)``: a live event for the staff pages;
    - ``record(event)``: a durable event for remote ops (into the outbox);
    - ``cleared()``: the shutdown committed before a restart no longer holds: take orders.
    """

    status: Callable[[dict[str, Any]], object]
    publish: Callable[[str, dict[str, Any]], object]
    record: Callable[[dict[str, Any]], object]
    cleared: Callable[[], object]


class PowerService:
    """Owns the power monitor of one kit (and, in ``dropkit sim``, the simulated rig)."""

    def __init__(self, config: PowerConfig, outputs: PowerOutputs, steps: ShutdownSteps, *,
                 simulated: bool, rig_file: Path | None = None) -> None:
        self.config, self.outputs, self.steps = config, outputs, steps
        self.simulated = simulated
        self.rig_file = rig_file
        """``dropkit sim``: where the simulated rig is kept over a restart (its pack's charge)."""
        self.sim: SimulatedPower | None = None
        self.monitor: PowerMonitor | None = None
        self._bus: LazySMBus | None = None

    def start(self) -> None:
        """Build the sensors and the monitor (on the simulated rig in ``dropkit sim``)."""
        config = self.config
        if not config.enabled:
            return
        if self.simulated:
            if config.shutdown_command == PowerConfig().shutdown_command:
                config = dataclasses.replace(config, shutdown_command=SIM_SHUTDOWN_COMMAND)
            from simulators.live_power import SimulatedPower

            self.sim = SimulatedPower()
            self._carry_on(self.sim)
            sensors = build_sensors(config, self.sim.bus)
        else:
            self._bus = LazySMBus(config.bus)
            sensors = build_sensors(config, self._bus)
        self.monitor = PowerMonitor(sensors, config, self.steps, on_status=self._on_status,
                                    on_event=self._on_event)

    def parts(self) -> dict[str, Callable[[], Awaitable[object]]]:
        """The long-running tasks to supervise: the monitor, and the simulated rig."""
        parts: dict[str, Callable[[], Awaitable[object]]] = {}
        if self.sim is not None:
            parts["power_rig"] = self.sim.run
        if self.monitor is not None:
            parts["power"] = self.monitor.run
            if self.config.fail_gpio >= 0:
                parts["power_fail_line"] = self.monitor.watch_fail_line
        return parts

    def close(self) -> None:
        """Release the sensors and the bus (after the parts stopped); a running shutdown
        sequence goes on."""
        if self.monitor is not None:
            self.monitor.close()
        if self.sim is not None and self.rig_file is not None:
            try:
                self.rig_file.write_text(json.dumps(self.sim.snapshot()))
            except OSError as exc:  # the state directory is gone or full: the next start
                # begins with a fresh rig
                log.warning("simulated rig not saved to %s (%s)", self.rig_file, exc)
        if self._bus is not None:
            self._bus.close()

    async def wait_for_shutdown(self) -> None:
        """Let a running shutdown sequence finish (its command runs after the store closed)."""
        if self.monitor is not None and self.monitor.shutdown_task is not None:
            report = await self.monitor.shutdown_task
            log.warning("shutdown sequence done: %s", report)

    @property
    def shutdown_reason(self) -> str:
        """Why the monitor committed the shutdown; empty before."""
        return self.monitor.shutdown_reason if self.monitor is not None else ""

    def resume_shutdown(self) -> bool:
        """The kit committed a shutdown before this start: back into it while the battery is
        critical (:meth:`PowerMonitor.resume_shutdown`); False without a monitor."""
        if self.monitor is None:
            return False
        self.monitor.resume_shutdown()
        return True

    def request_shutdown(self, reason: str) -> bool:
        """Start the shutdown sequence now (the panel's long press); False without a monitor."""
        if self.monitor is None:
            return False
        self.monitor.request_shutdown(reason)
        return True

    def health(self, status: PowerStatus | None = None) -> dict[str, Any]:
        status = status or (self.monitor.status if self.monitor else None)
        health: dict[str, Any] = status.to_dict() if status else {"state": "unknown"}
        if self.sim is not None:
            health["simulated_rig"] = self.sim.snapshot()
        return health

    def _carry_on(self, sim: SimulatedPower) -> None:
        if self.rig_file is None or not self.rig_file.exists():
            return
        try:
            sim.carry_on(json.loads(self.rig_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("simulated rig %s not carried on (%s): a fresh one", self.rig_file, exc)

    # -- what the monitor tells --------------------------------------------------------------

    def _on_status(self, status: PowerStatus) -> None:
        self.outputs.status(self.health(status))

    def _on_event(self, event: dict[str, Any]) -> None:
        log.debug("power event: %s", event)  # agent.power has logged it in words already
        kind = event.get("type", "")
        if kind in ALERTS or (kind == "battery_level" and event.get("to") != "ok"):
            self.outputs.publish("alert", event)
        self.outputs.record(event)
        if kind == "shutdown_cleared":
            self.outputs.cleared()
