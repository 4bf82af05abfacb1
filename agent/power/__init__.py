"""Power policy, NUT style: which source feeds the kit, how much battery is left, when to stop.

The drivers in :mod:`hw.power` report facts and decide nothing. One :class:`PowerMonitor` reads
them off the event loop, applies the policy (debounced state, thresholds, fault handling) and
tells the daemon through two callbacks: ``on_status`` (a :class:`PowerStatus`, the telemetry) and
``on_event`` (a dict: power transitions, sensor faults, the shutdown). On a critical battery it
counts down and then runs a :class:`ShutdownSequence` whose steps the daemon supplies
(:class:`ShutdownSteps`). :class:`SimulatedPower` is the same hardware for ``dropkit sim``.
``docs/power.md`` is the contract: states, thresholds, the shutdown sequence, the payloads.

    >>> import asyncio
    >>> async def demo():
    ...     sim = SimulatedPower()
    ...     events = []
    ...     monitor = PowerMonitor(sim.sensors(), PowerConfig(), ShutdownSteps.inert(),
    ...                            on_event=events.append)
    ...     await monitor.poll()
    ...     sim.pull_mains()
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
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from agent.backoff import Backoff
from agent.config import PowerConfig
from agent.core.clock import now_iso
from hw.power import INA219, INA226, MAX17048, GaugeReading, PowerReading, SMBusLike

if TYPE_CHECKING:
    from gpiozero import DigitalInputDevice
    from gpiozero.pins import Factory

    from simulators.power_rig import Scenario, ScenarioRunner
    from simulators.smbus import I2CDevice

log = logging.getLogger(__name__)

SensorName = Literal["mains", "battery", "gauge"]
SENSOR_NAMES: tuple[SensorName, ...] = ("mains", "battery", "gauge")
NUT_FLAGS = ("FSD", "OL", "OB", "CHRG", "DISCHRG", "LB")
"""The flags of ``state``, in the order they are written (FSD first, as upsd writes it)."""
UNKNOWN_STATE = "unknown"
"""``state`` before any flag is known (no sensor has answered yet)."""
PowerEvent = dict[str, Any]

FAULT_AFTER_FAILURES = 3
"""Consecutive failed reads before a sensor is reported as faulted; fewer are retried quietly."""
MAX_BACKOFF_S = 5.0
"""Longest wait between retries of a failing sensor."""
CURRENT_DEADBAND_AMPS = 0.05
"""Battery current within ± this is neither charging nor discharging."""
RATE_DEADBAND_PERCENT_PER_HOUR = 0.5
"""Gauge rate within ± this is neither charging nor discharging."""

_CURRENT_MONITORS = {"ina219": INA219, "ina226": INA226}


# -- sensors ------------------------------------------------------------------------------


class CurrentSensor(Protocol):
    """An INA219 or INA226 driver, as the monitor uses it."""

    def configure(self) -> None: ...

    def read(self) -> PowerReading: ...


class ChargeGauge(Protocol):
    """A MAX17048 driver, as the monitor uses it."""

    def read(self) -> GaugeReading: ...


@dataclass(frozen=True)
class PowerSensors:
    """The drivers the monitor reads; a current monitor that is not fitted is None."""

    gauge: ChargeGauge
    mains: CurrentSensor | None = None
    battery: CurrentSensor | None = None


def build_sensors(config: PowerConfig, bus: SMBusLike) -> PowerSensors:
    """The drivers ``[power]`` describes, on ``bus`` (a :class:`LazySMBus` on a Pi)."""

    def current_monitor(name: str) -> CurrentSensor | None:
        chip = getattr(config, f"{name}_chip")
        if chip == "none":
            return None
        return _CURRENT_MONITORS[chip](
            bus, getattr(config, f"{name}_address"),
            shunt_ohms=getattr(config, f"{name}_shunt_ohms"),
            max_expected_amps=getattr(config, f"{name}_max_amps"))

    return PowerSensors(gauge=MAX17048(bus, config.gauge_address),
                        mains=current_monitor("mains"), battery=current_monitor("battery"))


class LazySMBus:
    """``smbus2.SMBus(bus)``, opened at the first call and again after a failed open.

    So a missing or forbidden ``/dev/i2c-N`` is one more sensor fault that the monitor reports
    and retries, not a failed start. Calls come from the monitor's one I2C thread.
    """

    def __init__(self, bus: int | str) -> None:
        self.bus = bus
        self._smbus: Any = None

    def _opened(self) -> Any:
        if self._smbus is None:
            from smbus2 import SMBus

            self._smbus = SMBus(self.bus)
        return self._smbus

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._opened().read_word_data(i2c_addr, register, force)

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self._opened().write_word_data(i2c_addr, register, value, force)

    def close(self) -> None:
        if self._smbus is not None:
            self._smbus.close()
            self._smbus = None


# -- status and telemetry -----------------------------------------------------------------


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

    ``state`` holds NUT flags separated by spaces (``"OL CHRG"``, ``"OB DISCHRG LB"``,
    ``"FSD OB DISCHRG LB"``); ``"unknown"`` while nothing is known. ``feeding`` is the source
    that feeds the kit, debounced. ``ts`` is ISO 8601 UTC; ``seq`` counts statuses from 1.
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
            "sensor_faults": list(self.sensor_faults),
            "shutdown_in_s": _rounded(self.shutdown_in_s, 1),
        }


def _nullable(kind: str, **limits: float) -> dict[str, Any]:
    return {"type": [kind, "null"], **limits}


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties),
            "additionalProperties": False}


_SOURCE_SCHEMA = _object({"present": _nullable("boolean"), "volts": _nullable("number"),
                          "amps": _nullable("number"), "watts": _nullable("number")})
_FLAG = "(" + "|".join(NUT_FLAGS) + ")"

TELEMETRY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "urn:dropkit:telemetry:power",
    "title": "dropkit/<kit_id>/telemetry/power",
    **_object({
        "ts": {"type": "string", "format": "date-time"},
        "seq": {"type": "integer", "minimum": 1},
        "state": {"type": "string", "pattern": f"^({UNKNOWN_STATE}|{_FLAG}( {_FLAG})*)$",
                  "description": "NUT flags separated by spaces, or unknown"},
        "feeding": {"enum": ["mains", "battery", None]},
        "sources": _object({"mains": _SOURCE_SCHEMA, "battery": _SOURCE_SCHEMA}),
        "ups": _object({"percent": _nullable("number", minimum=0),
                        "volts": _nullable("number", minimum=0),
                        "rate_percent_per_hour": _nullable("number"),
                        "minutes_left": _nullable("number", minimum=0)}),
        "sensor_faults": {"type": "array", "items": {"enum": list(SENSOR_NAMES)},
                          "uniqueItems": True},
        "shutdown_in_s": _nullable("number", minimum=0),
    }),
    "additionalProperties": True,
}
"""JSON Schema (draft 2020-12) of :meth:`PowerStatus.to_dict`, as in docs/power.md. Other
top-level keys are allowed: the daemon adds its own (``kit_id``, ``mode``, ``queue_depth``)."""


# -- debounce -----------------------------------------------------------------------------

T = TypeVar("T")


class Debounced(Generic[T]):
    """A value that takes a new reading only when ``count`` readings in a row agree on it.

    >>> mains = Debounced(2)
    >>> mains.observe(True), mains.value          # the first reading sets it
    (True, True)
    >>> mains.observe(False), mains.observe(True), mains.observe(False), mains.observe(False)
    (False, False, False, True)
    >>> mains.value
    False
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.value: T | None = None
        self._candidate: T | None = None
        self._seen = 0

    def observe(self, reading: T) -> bool:
        """Count a reading; True when it changed the value."""
        if self.value is None or reading == self.value:
            self._seen = 0
            changed, self.value = self.value is None, reading
            return changed
        if reading != self._candidate:
            self._candidate, self._seen = reading, 0
        self._seen += 1
        if self._seen < self.count:
            return False
        return self.force(reading)

    def force(self, value: T) -> bool:
        """Take a value at once (a signal that needs no debounce); True when it changed."""
        changed = value != self.value
        self.value, self._candidate, self._seen = value, None, 0
        return changed


# -- the shutdown sequence ----------------------------------------------------------------


async def _nothing(*_: object) -> None:
    return None


@dataclass(frozen=True)
class ShutdownSteps:
    """What the daemon does when the kit must stop; each is awaited in this order.

    - ``stop_taking_orders()``: new orders get 503 with a clear message from now on.
    - ``flush_outbox(timeout_s)``: relay what is queued (the ``shutdown`` event, handed to
      ``on_event`` just before, included) if the uplink is connected; return whether the
      outbox is empty (False at once when not connected).
    - ``publish_final(status)``: publish this last telemetry (state ``FSD ...``) and return
      once it is delivered.
    - ``close_store()``: commit what is queued and close the store.
    """

    stop_taking_orders: Callable[[], Awaitable[object]]
    flush_outbox: Callable[[float], Awaitable[object]]
    publish_final: Callable[[PowerStatus], Awaitable[object]]
    close_store: Callable[[], Awaitable[object]]

    @classmethod
    def inert(cls) -> ShutdownSteps:
        """Steps that do nothing: for a kit, bench or test with no orders or uplink."""
        return cls(_nothing, _nothing, _nothing, _nothing)


@dataclass(frozen=True)
class StepOutcome:
    """How one step (or the command) went."""

    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass(frozen=True)
class ShutdownReport:
    """What a :class:`ShutdownSequence` did."""

    steps: tuple[StepOutcome, ...]
    """The four steps then the command, in the order they ran."""

    @property
    def ok(self) -> bool:
        return all(step.ok for step in self.steps)


class ShutdownSequence:
    """The four :class:`ShutdownSteps`, then the shutdown command: once, never again.

    A step that fails or outlasts ``step_timeout_s`` is logged and the sequence goes on: a
    stuck flush must not keep the kit from stopping before the battery does. The command runs
    as ``shlex.split(command)``, without a shell.
    """

    def __init__(self, steps: ShutdownSteps, command: str, *, step_timeout_s: float) -> None:
        self.steps = steps
        self.argv = shlex.split(command)
        self.step_timeout_s = step_timeout_s
        self.started = False

    async def run(self, final_status: PowerStatus) -> ShutdownReport:
        """Run the steps and the command; RuntimeError if it has run before."""
        if self.started:
            raise RuntimeError("the shutdown sequence runs only once")
        self.started = True
        steps, timeout = self.steps, self.step_timeout_s
        outcomes = [
            await self._step("stop_taking_orders", steps.stop_taking_orders),
            await self._step("flush_outbox", lambda: steps.flush_outbox(timeout)),
            await self._step("publish_final", lambda: steps.publish_final(final_status)),
            await self._step("close_store", steps.close_store),
            await self._step("command", self._run_command),
        ]
        report = ShutdownReport(tuple(outcomes))
        if not outcomes[-1].ok:
            log.critical("shutdown command %s failed (%s): the kit stays up with orders "
                         "stopped", shlex.join(self.argv), outcomes[-1].detail)
        return report

    async def _step(self, name: str, call: Callable[[], Awaitable[object]]) -> StepOutcome:
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(call(), self.step_timeout_s)
            ok, detail = True, "" if result is None else str(result)
        except TimeoutError:
            ok, detail = False, f"timed out after {self.step_timeout_s} s"
        except Exception as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        outcome = StepOutcome(name, ok, detail, round(time.monotonic() - started, 3))
        log.log(logging.INFO if ok else logging.ERROR, "shutdown step %s: %s%s", name,
                "done" if ok else "failed", f" ({detail})" if detail else "")
        return outcome

    async def _run_command(self) -> str:
        process = await asyncio.create_subprocess_exec(*self.argv, stdin=subprocess.DEVNULL)
        code = await process.wait()
        if code != 0:
            raise RuntimeError(f"{shlex.join(self.argv)} exited with status {code}")
        return f"{shlex.join(self.argv)} exited with status 0"


# -- the monitor --------------------------------------------------------------------------


def _ignore(_: object) -> None:
    return None


Reading = PowerReading | GaugeReading


@dataclass
class _Sensor:
    """The monitor's bookkeeping for one driver."""

    name: SensorName
    read: Callable[[], Reading]
    configure: Callable[[], None] | None
    every_poll: bool
    """Read at every poll (the mains watch) or only at samples."""
    configured: bool = False
    failures: int = 0
    faulted_since: float | None = None
    retry_at: float = 0.0
    reading: Any = None
    """The last good reading; None while faulted."""


_ReadJob = tuple[SensorName, Callable[[], Reading], Callable[[], None] | None]


def _read_on_i2c_thread(jobs: list[_ReadJob]) -> list[tuple[SensorName, Reading | OSError]]:
    """Read each sensor (configuring it first where asked); a bus error is a result too."""
    results: list[tuple[SensorName, Reading | OSError]] = []
    for name, read, configure in jobs:
        try:
            if configure is not None:
                configure()
            results.append((name, read()))
        except OSError as exc:  # hw.power.SensorError, or the bus itself could not open
            results.append((name, exc))
    return results


class PowerMonitor:
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
        self.polls = 0
        self.status: PowerStatus | None = None
        """The latest status; None before the first poll."""
        self._on_status, self._on_event = on_status, on_event
        self._clock = clock
        self._pin_factory = pin_factory
        self._sensors: dict[SensorName, _Sensor] = {}
        drivers: tuple[tuple[SensorName, Any], ...] = (
            ("mains", sensors.mains), ("battery", sensors.battery), ("gauge", sensors.gauge))
        for name, driver in drivers:
            if driver is not None:
                configure = getattr(driver, "configure", None)
                self._sensors[name] = _Sensor(name, driver.read, configure, name == "mains")
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="power-i2c")
        self._fail_input: DigitalInputDevice | None = None
        self._mains: Debounced[bool] = Debounced(config.debounce_polls)
        self._level: Debounced[str] = Debounced(config.debounce_polls)
        self._level_detail = ""
        self._pending_detail = ""
        self._on_battery_since: float | None = None
        self._next_sample_at = -math.inf
        self._principal = ""
        self._seq = 0
        self._shutdown_at: float | None = None
        self._fsd = False
        self._closed = False

    # -- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Poll every ``poll_interval_s`` (on a fixed beat) until cancelled, then close."""
        loop = asyncio.get_running_loop()
        try:
            if self.config.fail_gpio >= 0:
                self._open_fail_input(loop)
            beat = loop.time()
            while True:
                await self.poll()
                beat = max(beat + self.config.poll_interval_s, loop.time())
                await asyncio.sleep(beat - loop.time())
        finally:
            self.close()

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
        jobs: list[_ReadJob] = [(s.name, s.read, None if s.configured else s.configure)
                                for s in due]
        results = await asyncio.get_running_loop().run_in_executor(
            self._executor, _read_on_i2c_thread, jobs) if jobs else []
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
            self._level.observe(self._judge_level(gauge))
        self._apply_policy(now)
        return self._publish(now, force=sampling)

    def close(self) -> None:
        """Release the power-fail line and the I2C thread; the shutdown task runs on."""
        self._closed = True
        if self._fail_input is not None:
            self._fail_input.close()
            self._fail_input = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    def request_shutdown(self, reason: str = "requested") -> None:
        """Shut down now, without the countdown (as NUT's ``upsmon -c fsd``); once only."""
        if not self._fsd:
            self._commit(self._clock(), reason, "shutdown requested")

    # -- sensors ----------------------------------------------------------------------------

    def _failed(self, sensor: _Sensor, error: OSError, now: float) -> None:
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

    def _succeeded(self, sensor: _Sensor, reading: Reading, now: float) -> None:
        if sensor.faulted_since is not None:
            down_s = round(now - sensor.faulted_since, 3)
            log.warning("%s sensor recovered after %.1f s", sensor.name, down_s)
            self._emit({"type": "sensor_recovered", "sensor": sensor.name, "down_s": down_s})
        elif isinstance(reading, PowerReading) and reading.recalibrated:
            log.info("%s sensor had lost its calibration (a brown-out) and was set again",
                     sensor.name)
        sensor.configured, sensor.failures, sensor.retry_at = True, 0, 0.0
        sensor.faulted_since, sensor.reading = None, reading

    def _discharging(self) -> bool | None:
        """Whether the battery is discharging (False: charging; None: idle or unknown)."""
        battery, gauge = self._sensors.get("battery"), self._sensors.get("gauge")
        if battery is not None and battery.reading is not None:
            amps = battery.reading.amps
            if abs(amps) > CURRENT_DEADBAND_AMPS:
                return amps > 0
        if gauge is not None and gauge.reading is not None:
            rate = gauge.reading.rate_percent_per_hour
            if abs(rate) > RATE_DEADBAND_PERCENT_PER_HOUR:
                return rate < 0
        return None

    def _mains_observation(self, mains: PowerReading | None) -> bool | None:
        """Is mains present, by this poll's evidence? The power-fail line wins, then the mains
        monitor; with neither (not fitted, or faulted) the battery's direction. None when
        nothing tells, or while a read of the mains monitor is being retried."""
        if self._fail_input is not None and self._fail_input.is_active:
            return False
        if mains is not None:
            return mains.volts >= self.config.mains_present_volts
        if self._fail_input is not None:
            return True
        mains_sensor = self._sensors.get("mains")
        if mains_sensor is not None and mains_sensor.faulted_since is None:
            return None
        discharging = self._discharging()
        return None if discharging is None else not discharging

    def _judge_level(self, gauge: GaugeReading) -> str:
        """"ok", "low" or "critical" by percent and minutes left; the why in _level_detail."""
        config = self.config
        left = minutes_left(gauge.percent, gauge.rate_percent_per_hour)
        for level, percent, minutes in (
                ("critical", config.critical_percent, config.critical_minutes),
                ("low", config.low_percent, config.low_minutes)):
            why = []
            if gauge.percent <= percent:
                why.append(f"{gauge.percent:.1f} % (at most {percent} %)")
            if left is not None and left <= minutes:
                why.append(f"{left:.1f} min left (at most {minutes} min)")
            if why:
                self._level_detail = f"battery {level}: " + ", ".join(why)
                return level
        self._level_detail = ""
        return "ok"

    # -- the fail line ----------------------------------------------------------------------

    def _open_fail_input(self, loop: asyncio.AbstractEventLoop) -> None:
        from gpiozero import DigitalInputDevice

        # Pulled towards its inactive level, so an undriven line never reads as a failure.
        device = DigitalInputDevice(self.config.fail_gpio,
                                    pull_up=not self.config.fail_gpio_active_high,
                                    pin_factory=self._pin_factory)
        # gpiozero calls back on its own thread: hand the edge to the loop.
        device.when_activated = lambda: loop.call_soon_threadsafe(self._power_failed)
        self._fail_input = device

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
        if self._fsd:
            return
        if self._shutdown_at is not None:
            if self._mains.value is True:
                self._shutdown_at = None
                log.warning("mains is back: shutdown cancelled")
                self._emit({"type": "shutdown_cancelled", "reason": "mains_restored"})
            elif now >= self._shutdown_at:
                self._commit(now, "battery_critical", self._pending_detail)
            return
        reason = self._critical_reason(now) if on_battery else None
        if reason is None:
            return
        self._pending_detail = reason[1]
        self._shutdown_at = now + self.config.shutdown_delay_s
        log.warning("%s: shutdown in %g s unless mains returns", reason[1],
                    self.config.shutdown_delay_s)
        self._emit({"type": "shutdown_pending", "in_s": self.config.shutdown_delay_s,
                    "reason": reason[0], "detail": reason[1]})
        if self.config.shutdown_delay_s == 0:
            self._commit(now, reason[0], reason[1])

    def _critical_reason(self, now: float) -> tuple[str, str] | None:
        """Why the battery is critical (reason, detail), on battery; None when it is not."""
        if self._level.value == "critical":
            return "battery_critical", self._level_detail
        gauge = self._sensors["gauge"]
        if gauge.faulted_since is not None and self._on_battery_since is not None:
            blind_s = now - max(gauge.faulted_since, self._on_battery_since)
            if blind_s >= self.config.dead_time_s:
                return ("battery_level_unknown", f"on battery with no charge reading for "
                        f"{blind_s:.0f} s (dead_time_s {self.config.dead_time_s:g})")
        return None

    def _commit(self, now: float, reason: str, detail: str) -> None:
        """FSD: from here the sequence runs to the command, whatever the mains does."""
        self._fsd, self._shutdown_at = True, None
        log.critical("shutting down: %s", detail)
        self._emit({"type": "shutdown", "reason": reason, "detail": detail,
                    "command": shlex.join(self.sequence.argv)})
        status = self._publish(now, force=True)
        assert status is not None
        self.shutdown_task = asyncio.get_running_loop().create_task(self.sequence.run(status))

    # -- output -----------------------------------------------------------------------------

    def _state_flags(self) -> list[str]:
        flags = ["FSD"] if self._fsd else []
        if self._mains.value is not None:
            flags.append("OL" if self._mains.value else "OB")
        discharging = True if self._mains.value is False else self._discharging()
        if discharging is not None:
            flags.append("DISCHRG" if discharging else "CHRG")
        if self._level.value in ("low", "critical"):
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
            ups=UpsStatus.of(last("gauge")),
            sensor_faults=tuple(name for name, sensor in sensors.items()
                                if sensor.faulted_since is not None),
            shutdown_in_s=(0.0 if self._fsd else None if self._shutdown_at is None
                           else max(0.0, self._shutdown_at - now)),
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


# -- simulation ---------------------------------------------------------------------------


class _ForwardingBus:
    """The bus of whichever scenario a :class:`SimulatedPower` runs now."""

    def __init__(self, sim: SimulatedPower) -> None:
        self._sim = sim

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        return self._sim.runner.bus.read_word_data(i2c_addr, register, force)

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self._sim.runner.bus.write_word_data(i2c_addr, register, value, force)


class SimulatedPower:
    """The power rig of ``dropkit sim``: a :class:`simulators.power_rig.ScenarioRunner` moved on
    in real time (times ``speed``), with the controls a staff page or drill needs.

    ``scenario`` is ``"live"`` (mains present, a full pack, nothing scripted) or a name in
    :data:`simulators.power_rig.SCENARIOS`; :meth:`run_scenario` starts another, on a fresh rig
    and bus that the same drivers reach (a re-plugged chip powers up uncalibrated, and the
    drivers set it again). Call everything on the event loop's thread.
    """

    def __init__(self, scenario: str = "live", *, speed: float = 1.0, tick_s: float = 0.1,
                 seed: int = 0) -> None:
        if speed <= 0 or tick_s <= 0:
            raise ValueError("speed and tick_s must be positive")
        self.speed, self.tick_s, self.seed = speed, tick_s, seed
        self.bus = _ForwardingBus(self)
        self.runner: ScenarioRunner
        self._unplugged: dict[SensorName, I2CDevice] = {}
        self.run_scenario(scenario)

    @staticmethod
    def scenarios() -> dict[str, Scenario]:
        """The scenarios by name: ``live`` and the drills."""
        from simulators.power_rig import SCENARIOS, Scenario

        live = Scenario("live", "Mains present, a full battery, the default load; nothing "
                        "scripted.", (), duration_seconds=math.inf)
        return {"live": live, **SCENARIOS}

    def sensors(self, config: PowerConfig | None = None) -> PowerSensors:
        """Drivers for ``config`` (default :class:`PowerConfig`, which matches the rig's
        wiring) on the simulated bus."""
        return build_sensors(config or PowerConfig(), self.bus)

    async def run(self) -> None:
        """Move the rig on with the loop's clock until cancelled."""
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.tick_s)
            now = loop.time()
            self.advance((now - last) * self.speed)
            last = now

    def advance(self, seconds: float) -> None:
        """Move the rig on by ``seconds`` of rig time, doing the scenario's steps on the way."""
        for step in self.runner.advance(seconds):
            log.info("sim power: %s %s", step.action, "" if step.value is None else step.value)

    def run_scenario(self, name: str) -> Scenario:
        """Start a scenario from its own starting state; ValueError for an unknown name."""
        from simulators.power_rig import ScenarioRunner

        scenarios = self.scenarios()
        if name not in scenarios:
            raise ValueError(f"unknown power scenario {name!r}; expected one of "
                             f"{', '.join(scenarios)}")
        self.runner = ScenarioRunner(scenarios[name], seed=self.seed)
        self._unplugged.clear()
        log.info("sim power: scenario %s: %s", name, scenarios[name].description)
        return scenarios[name]

    def pull_mains(self) -> None:
        self.runner.rig.mains_present = False

    def restore_mains(self) -> None:
        self.runner.rig.mains_present = True

    def set_mains_volts(self, volts: float) -> None:
        """Mains sags or recovers (below the rig's 4.6 V switchover the UPS takes over)."""
        self.runner.rig.mains_volts = volts

    def set_load(self, amps: float) -> None:
        if amps < 0:
            raise ValueError("the load cannot be negative")
        self.runner.rig.load_amps = amps

    def unplug(self, sensor: SensorName) -> None:
        """Take a power chip off the bus, as a loose cable would."""
        address = self._address(sensor)
        if address not in self.runner.bus.addresses():
            raise ValueError(f"the {sensor} sensor is not on the bus")
        self._unplugged[sensor] = self.runner.bus.detach(address)

    def plug(self, sensor: SensorName) -> None:
        """Plug a chip taken off with :meth:`unplug` back in: it powers up with reset registers."""
        from simulators.power_chips import PowerChipModel

        if sensor not in self._unplugged:
            raise ValueError(f"the {sensor} sensor was not unplugged")
        device = self._unplugged.pop(sensor)
        assert isinstance(device, PowerChipModel)
        device.brown_out()
        self.runner.bus.attach(self._address(sensor), device)

    def snapshot(self) -> dict[str, Any]:
        """The rig's truth, for the staff page and drill verdicts (not what the sensors say)."""
        rig = self.runner.rig
        return {"scenario": self.runner.scenario.name, "rig_s": round(rig.now, 1),
                "speed": self.speed, "mains_present": rig.mains_present,
                "mains_volts": rig.mains_volts, "on_mains": rig.on_mains,
                "kit_powered": rig.kit_powered, "load_amps": rig.load_amps,
                "battery_percent": round(rig.battery.state_of_charge * 100, 2),
                "unplugged": [name for name in SENSOR_NAMES
                              if self._address(name) not in self.runner.bus.addresses()]}

    @staticmethod
    def _address(sensor: SensorName) -> int:
        from simulators.power_rig import (
            BATTERY_MONITOR_ADDRESS,
            FUEL_GAUGE_ADDRESS,
            MAINS_MONITOR_ADDRESS,
        )

        addresses = {"mains": MAINS_MONITOR_ADDRESS, "battery": BATTERY_MONITOR_ADDRESS,
                     "gauge": FUEL_GAUGE_ADDRESS}
        if sensor not in addresses:
            raise ValueError(f"unknown sensor {sensor!r}; expected one of {SENSOR_NAMES}")
        return addresses[sensor]
