"""The power monitor as the daemon runs it, and the shutdown steps it performs on the kit.

:mod:`agent.power` holds the policy (states, thresholds, the sequence); this module gives it the
kit's real sensors (or the simulated rig in ``dropkit sim``) and the four steps of the shutdown:
stop taking orders, flush the outbox, publish the last telemetry, close the store. Then the
shutdown command runs and the daemon exits. docs/power.md describes the sequence.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from agent.config import PowerConfig
from agent.power.monitor import PowerMonitor
from agent.power.sensors import LazySMBus, build_sensors
from agent.power.shutdown import ShutdownSteps

if TYPE_CHECKING:
    from agent.app.daemon import Agent
    from agent.power.status import PowerStatus
    from simulators.live_power import SimulatedPower

log = logging.getLogger(__name__)

# Events that are alerts on the staff page (all power events reach remote ops).
ALERTS = {"sensor_fault", "shutdown_pending", "shutdown"}
# dropkit sim must never power off the laptop it runs on: unless the config names another
# command (a drill's recorder), the simulated kit's power-off does nothing.
SIM_SHUTDOWN_COMMAND = "true"



class KitPower:
    """Owns the power monitor of one agent (and, in ``dropkit sim``, the simulated rig)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.sim: SimulatedPower | None = None
        self.monitor: PowerMonitor | None = None
        self.refusal = ""  # why new orders are refused ("" while they are taken)
        self._bus: LazySMBus | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._last_state = ""

    @property
    def status(self) -> PowerStatus | None:
        return self.monitor.status if self.monitor else None

    def state(self) -> str:
        status = self.status
        return status.state if status else "unknown"

    async def start(self) -> None:
        config = self.agent.config.power
        if not config.enabled:
            return
        if self.agent.wiring.simulated:
            if config.shutdown_command == PowerConfig().shutdown_command:
                config = dataclasses.replace(config, shutdown_command=SIM_SHUTDOWN_COMMAND)
            from simulators.live_power import SimulatedPower

            self.sim = SimulatedPower()
            sensors = build_sensors(config, self.sim.bus)
            self._tasks.append(asyncio.create_task(self.sim.run()))
        else:
            self._bus = LazySMBus(config.bus)
            sensors = build_sensors(config, self._bus)
        steps = ShutdownSteps(stop_taking_orders=self._stop_taking_orders,
                              flush_outbox=self._flush_outbox,
                              publish_final=self._publish_final,
                              close_store=self._close_store)
        self.monitor = PowerMonitor(sensors, config, steps, on_status=self._on_status,
                                    on_event=self._on_event)
        self._tasks.append(asyncio.create_task(self.monitor.run()))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self.monitor is not None:
            self.monitor.close()
        if self._bus is not None:
            self._bus.close()

    async def wait_for_shutdown(self) -> None:
        """Let a running shutdown sequence finish (its command runs after the store closed)."""
        if self.monitor is not None and self.monitor.shutdown_task is not None:
            report = await self.monitor.shutdown_task
            log.warning("shutdown sequence done: %s", report)

    def request_shutdown(self, reason: str) -> bool:
        """Start the shutdown sequence now (the panel's long press); False without a monitor."""
        if self.monitor is None:
            return False
        self.monitor.request_shutdown(reason)
        return True

    def health(self) -> dict[str, Any]:
        status = self.status
        health: dict[str, Any] = status.to_dict() if status else {"state": "unknown"}
        if self.sim is not None:
            health["simulated_rig"] = self.sim.snapshot()
        return health

    # -- what the monitor tells --------------------------------------------------------------

    def _on_status(self, status: PowerStatus) -> None:
        if status.state != self._last_state:
            self._last_state = status.state
            self.agent.events.publish("power", self.health())
            if self.agent.uplink is not None:
                self.agent.uplink.publish_telemetry_now()

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        log.debug("power event: %s", event)  # agent.power has logged it in words already
        if kind in ALERTS:
            self.agent.events.publish("alert", event)
        self.agent.background(self.agent.record_event(event))

    # -- the shutdown steps ----------------------------------------------------------------

    async def _stop_taking_orders(self) -> None:
        self.refusal = "the kit is shutting down (battery critical); no new orders"
        log.warning("shutdown: no new orders from now on")

    async def _flush_outbox(self, timeout_s: float) -> bool:
        # The shutdown event was handed over just before this step: let it reach the outbox.
        await self.agent.settle_background()
        uplink = self.agent.uplink
        if uplink is None or not uplink.connected:
            return False
        return await uplink.flush(timeout_s)

    async def _publish_final(self, status: PowerStatus) -> None:
        if self.agent.uplink is not None:
            await self.agent.uplink.publish_final_telemetry()

    async def _close_store(self) -> None:
        await self.agent.stop()
        self.agent.request_exit()
