"""The power monitor: reads the sensors off the event loop and applies the policy of docs/power.md.

One :class:`PowerMonitor` reads the drivers of :mod:`hw.power` (which report facts and decide
nothing), applies the policy (debounced state, thresholds, fault handling) and tells the daemon
through two callbacks: ``on_status`` (a :class:`~agent.power.status.PowerStatus`, the telemetry)
and ``on_event`` (a dict: power transitions, sensor faults, the shutdown). On a critical battery
it counts down and then runs a :class:`~agent.power.shutdown.ShutdownSequence` whose steps the
daemon supplies. What it says (the NUT flags, the status, the events) is built by its side in
:mod:`agent.power.output`. On the simulated rig of ``dropkit sim``:

    >>> import asyncio
    >>> from agent.config import PowerConfig
    >>> from agent.power.sensors import build_sensors
    >>> from agent.power.shutdown import ShutdownSteps
    >>> from simulators.live_power import SimulatedPower
    >>> async def demo():
    ...     sim = SimulatedPower()
    ...     events = []
    ...     monitor = PowerMonitor(build_sensors(PowerConfig(), sim.bus), PowerConfig(),
    ...                            ShutdownSteps.inert(), on_event=events.append)
    ...     await monitor.poll()
    ...     sim.pull_mains(); sim.advance(0.1)              # the chips convert on its clock
    ...     await monitor.poll(); await monitor.poll()      # debounce_polls = 2
    ...     monitor.close()
    ...     return [(e["from"], e["to"]) for e in events], monitor.status.state
    >>> asyncio.run(demo())
    ([(None, 'OL'), ('OL', 'OB')], 'OB DISCHRG')
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import shlex
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.backoff import Backoff
from agent.power.debounce import Debounced
from agent.power.judgement import BatteryJudge, mains_seen, time_left_s
from agent.power.output import MonitorOutput, PowerEvent
from agent.power.policy import Decision, ShutdownPolicy
from agent.power.sensors import ReadJob, TrackedSensor, read_on_i2c_thread
from agent.power.shutdown import ShutdownSequence
from agent.power.status import PowerStatus
from hw.power.current import PowerReading
from hw.power.max17048 import GaugeReading

if TYPE_CHECKING:
    from gpiozero import DigitalInputDevice
    from gpiozero.pins import Factory

    from agent.config import PowerConfig
    from agent.power.sensors import PowerSensors, Reading, SensorName
    from agent.power.shutdown import ShutdownReport, ShutdownSteps

log = logging.getLogger(__name__)

FAULT_AFTER_FAILURES = 3
"""Consecutive failed reads before a sensor is reported as faulted; fewer are retried quietly."""
MAX_BACKOFF_S = 5.0
"""Longest wait between retries of a failing sensor."""
BATTERY_REASONS = ("battery_critical", "battery_level_unknown")
"""Commit reasons that set ``LB``: the battery is what shuts the kit down."""


def _ignore(_: object) -> None:
    return None


class PowerMonitor(MonitorOutput):
    """Polls the power sensors and applies the policy of docs/power.md.

    ``on_status`` gets a :class:`PowerStatus` at every sample (``sample_interval_s``) and at
    every change of state; ``on_event`` gets event dicts. Both are called on the event loop's
    thread and must not block; an exception from one is logged, never fatal.

    I2C reads run on one worker thread (a Pi's SMBus call blocks for about 0.5 ms per word),
    so the loop never waits on the bus. ``clock`` (monotonic seconds) times the debounce,
    retries and countdown; tests pass a fake one and call :meth:`poll` themselves.
    ``pin_factory`` is gpiozero's, for the optional power-fail line (``fail_gpio``).
    """

    def __init__(self, sensors: PowerSensors, config: PowerConfig, steps: ShutdownSteps, *,
                 on_status: Callable[[PowerStatus], object] = _ignore,
                 on_event: Callable[[PowerEvent], object] = _ignore,
                 clock: Callable[[], float] = time.monotonic,
                 pin_factory: Factory | None = None) -> None:
        self.config = config
        self.sequence = ShutdownSequence(steps, config.shutdown_command,
                                         step_timeout_s=config.step_timeout_s)
        self.shutdown_task: asyncio.Task[ShutdownReport] | None = None
        """The running (or finished) shutdown sequence; await it for its report."""
        self.shutdown_reason = ""
        """Why the shutdown was committed (the ``shutdown`` event's reason); empty before."""
        self.polls = 0
        self.status: PowerStatus | None = None
        """The latest status; None before the first poll."""
        self._on_status, self._on_event = on_status, on_event
        self._clock = clock
        self._pin_factory = pin_factory
        self._sensors: dict[SensorName, TrackedSensor] = {}
        drivers: tuple[tuple[SensorName, Any], ...] = (
            ("mains", sensors.mains), ("battery", sensors.battery), ("gauge", sensors.gauge))
        for name, driver in drivers:
            if driver is not None:
                configure = getattr(driver, "configure", None)
                self._sensors[name] = TrackedSensor(
                    name, driver.read, configure, name == "mains",
                    acknowledge=getattr(driver, "clear_alerts", None))
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="power-i2c")
        self._fail_input: DigitalInputDevice | None = None
        self._mains: Debounced[bool] = Debounced(config.debounce_polls)
        self._battery = BatteryJudge(config)
        self.policy = ShutdownPolicy(config)
        self._on_battery_since: float | None = None
        self._next_sample_at = -math.inf
        self._principal = ""
        self._seq = 0
        self._fsd = False
        self._low_battery = False
        self._closed = False

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every ``poll_interval_s`` (on a fixed beat) until cancelled. It may be run
        again after it failed (the supervisor restarts it); :meth:`close` ends it for good."""
        loop = asyncio.get_running_loop()
        beat = loop.time()
        while True:
            await self.poll()
            beat = max(beat + self.config.poll_interval_s, loop.time())
            await asyncio.sleep(beat - loop.time())

    async def watch_fail_line(self) -> None:
        """Hold the power-fail line (``fail_gpio``) until cancelled: an edge puts the kit on
        battery at once. Run apart from :meth:`run`, so a line that cannot be opened (no such
        pin, no GPIO here) raises here while the sensors are still polled."""
        self._open_fail_input(asyncio.get_running_loop())
        try:
            await asyncio.Event().wait()
        finally:
            self._close_fail_input()

    async def poll(self) -> PowerStatus | None:
        """One poll: read what is due, update the state, act; returns the status if it was
        published (at a sample or a change)."""
        now = self._clock()
        self.polls += 1
        slack = self.config.poll_interval_s / 2
        sampling = now >= self._next_sample_at - slack
        if sampling:
            self._next_sample_at = now + self.config.sample_interval_s
        due = [sensor for sensor in self._sensors.values()
               if (sensor.every_poll or sampling) and now >= sensor.retry_at - slack]
        jobs: list[ReadJob] = [(s.name, s.read, s.before_read()) for s in due]
        results = await asyncio.get_running_loop().run_in_executor(
            self._executor, read_on_i2c_thread, jobs) if jobs else []
        now = self._clock()
        fresh: dict[SensorName, Reading] = {}
        for name, result in results:
            if isinstance(result, OSError):
                self._failed(self._sensors[name], result, now)
            else:
                self._succeeded(self._sensors[name], result, now)
                fresh[name] = result
        mains_seen = self._mains_observation(fresh.get("mains"))
        if mains_seen is not None and self._mains.observe(mains_seen):
            self._next_sample_at = now  # the next poll reads the battery side too
        if (gauge := fresh.get("gauge")) is not None:
            assert isinstance(gauge, GaugeReading)
            self._judge_gauge(gauge, now)
        self._apply_policy(now)
        return self._publish(now, force=sampling)

    def close(self) -> None:
        """Release the power-fail line and the I2C thread; the shutdown task runs on."""
        self._closed = True
        self._close_fail_input()
        self._executor.shutdown(wait=False, cancel_futures=True)

    def request_shutdown(self, reason: str = "requested") -> None:
        """Shut down now, without the countdown (as NUT's ``upsmon -c fsd``); once only."""
        if not self._fsd:
            self.policy.committed = True
            self._commit(self._clock(), reason, "shutdown requested")

    def resume_shutdown(self) -> None:
        """The kit committed a shutdown before it was started again (the intent is durable):
        shut down as soon as it is on battery at a critical level, without a countdown; a
        ``shutdown_cleared`` event once the battery is no longer critical or mains is back
        for ``mains_stable_s``."""
        self.policy.resume()

    # -- sensors ----------------------------------------------------------------------------

    def _failed(self, sensor: TrackedSensor, error: OSError, now: float) -> None:
        sensor.failures += 1
        sensor.configured = False  # a chip that comes back may have been reset or replaced
        interval = (self.config.poll_interval_s if sensor.every_poll
                    else self.config.sample_interval_s)
        sensor.retry_at = now + Backoff.nth(interval, MAX_BACKOFF_S, sensor.failures)
        log.debug("%s sensor read failed (%d in a row): %s", sensor.name, sensor.failures, error)
        if sensor.failures == FAULT_AFTER_FAILURES:
            sensor.faulted_since, sensor.reading = now, None
            log.warning("%s sensor fault: %s", sensor.name, error)
            self._emit({"type": "sensor_fault", "sensor": sensor.name, "error": str(error),
                        "errno": error.errno})

    def _succeeded(self, sensor: TrackedSensor, reading: Reading, now: float) -> None:
        if sensor.faulted_since is not None:
            down_s = round(now - sensor.faulted_since, 3)
            log.warning("%s sensor recovered after %.1f s", sensor.name, down_s)
            self._emit({"type": "sensor_recovered", "sensor": sensor.name, "down_s": down_s})
        elif isinstance(reading, PowerReading) and reading.recalibrated:
            log.info("%s sensor had lost its calibration (a brown-out) and was set again",
                     sensor.name)
        sensor.acknowledging = False  # whatever was to be acknowledged was, before this read
        sensor.configured, sensor.failures, sensor.retry_at = True, 0, 0.0
        sensor.faulted_since, sensor.reading = None, reading

    def _mains_observation(self, mains: PowerReading | None) -> bool | None:
        """Is mains present, by this poll's evidence? The power-fail line wins, then the mains
        monitor; with neither (not fitted, or faulted) the battery's direction. None when
        nothing tells, or while a read of the mains monitor is being retried."""
        if self._fail_input is not None and self._fail_input.is_active:
            return False
        if mains is not None:
            return mains_seen(self.config, mains.volts, self._mains.value)
        if self._fail_input is not None:
            return True
        mains_sensor = self._sensors.get("mains")
        if mains_sensor is not None and mains_sensor.faulted_since is None:
            return None
        discharging = self._discharging()
        return None if discharging is None else not discharging

    def _judge_gauge(self, reading: GaugeReading, now: float) -> None:
        change = self._battery.observe(reading, now)
        if self._battery.trust.acknowledge:
            self._battery.trust.acknowledge, self._sensors["gauge"].acknowledging = False, True
        if change is not None:
            self._emit({"type": "battery_level", "from": change[0], "to": change[1],
                        "detail": self._battery.detail})

    # -- the fail line ----------------------------------------------------------------------

    def _open_fail_input(self, loop: asyncio.AbstractEventLoop) -> None:
        from agent.power.sensors import open_fail_line

        # gpiozero calls back on its own thread: hand the edge to the loop.
        self._fail_input = open_fail_line(
            self.config, self._pin_factory, lambda: loop.call_soon_threadsafe(self._power_failed))

    def _close_fail_input(self) -> None:
        if self._fail_input is not None:
            self._fail_input.close()
            self._fail_input = None

    def _power_failed(self) -> None:
        """The power-fail line went active: on battery now, no debounce, no waiting for a poll."""
        if self._closed or not self._mains.force(False):
            return
        now = self._clock()
        self._next_sample_at = now
        self._apply_policy(now)
        self._publish(now, force=False)

    # -- policy -----------------------------------------------------------------------------

    def _apply_policy(self, now: float) -> None:
        on_battery = self._mains.value is False
        if not on_battery:
            self._on_battery_since = None
        elif self._on_battery_since is None:
            self._on_battery_since = now
        critical = self._critical_reason(now)
        recovered = critical is None and self._battery.level in ("ok", "low")
        for decision in self.policy.update(now, self._mains.value, critical, recovered,
                                           time_left_s(self._battery.trust.trusted)):
            self._carry_out(decision, now)

    def _carry_out(self, decision: Decision, now: float) -> None:
        if decision.kind == "pending":
            log.warning("%s: shutdown in %g s unless mains is back for %g s", decision.detail,
                        decision.in_s, self.config.mains_stable_s)
            self._emit({"type": "shutdown_pending", "in_s": round(decision.in_s, 1),
                        "reason": decision.reason, "detail": decision.detail})
        elif decision.kind == "cancelled":
            log.warning("shutdown cancelled: %s", decision.reason.replace("_", " "))
            self._emit({"type": "shutdown_cancelled", "reason": decision.reason})
        elif decision.kind == "cleared":
            log.warning("the shutdown begun before the restart is called off: %s",
                        decision.reason.replace("_", " "))
            self._emit({"type": "shutdown_cleared", "reason": decision.reason})
        else:
            self._commit(now, decision.reason, decision.detail)

    def _critical_reason(self, now: float) -> tuple[str, str] | None:
        """Why the battery is critical (reason, detail); None when it is not or not known.
        Without a charge reading it is critical once on battery for ``dead_time_s``."""
        if self._battery.level == "critical":
            return "battery_critical", self._battery.detail
        gauge = self._sensors["gauge"]
        if gauge.faulted_since is not None and self._on_battery_since is not None:
            blind_s = now - max(gauge.faulted_since, self._on_battery_since)
            if blind_s >= self.config.dead_time_s:
                return ("battery_level_unknown", f"on battery with no charge reading for "
                        f"{blind_s:.0f} s (dead_time_s {self.config.dead_time_s:g})")
        return None

    def _commit(self, now: float, reason: str, detail: str) -> None:
        """FSD (and LB when the battery is why): from here the sequence runs to the command,
        whatever the mains does."""
        self._fsd, self._low_battery = True, reason in BATTERY_REASONS
        self.shutdown_reason = reason
        log.critical("shutting down: %s", detail)
        self._emit({"type": "shutdown", "reason": reason, "detail": detail,
                    "command": shlex.join(self.sequence.argv)})
        status = self._publish(now, force=True)
        assert status is not None
        self.shutdown_task = asyncio.get_running_loop().create_task(self.sequence.run(status))
