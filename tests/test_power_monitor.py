"""The power monitor on the real drivers, over the simulated bus and power rig.

Most tests step the monitor by hand: a fake clock and the rig move on together by one poll
interval, then ``poll()`` runs, so a test asserts on polls rather than on wall time (bench/power.py
prints the wall-clock latency). The shutdown tests use a real store and a real command.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from gpiozero.pins.mock import MockFactory

from agent import schemas
from agent.config import ConfigError, PowerConfig
from agent.power.monitor import FAULT_AFTER_FAILURES, PowerMonitor
from agent.power.sensors import LazySMBus, PowerSensors, build_sensors
from agent.power.shutdown import ShutdownSequence, ShutdownSteps
from agent.power.status import NUT_FLAGS, UNKNOWN_STATE, PowerStatus
from agent.store import Store
from simulators.live_power import SimulatedPower
from simulators.power_rig import (
    FUEL_GAUGE_ADDRESS,
    MAINS_MONITOR_ADDRESS,
    SCENARIOS,
    PowerRig,
    Scenario,
    ScenarioRunner,
    Step,
)
from simulators.smbus import FakeSMBus

CONFIG = PowerConfig()


def scripted(*steps: Step, **rig: Any) -> Scenario:
    """A scripted rig: full battery, 0.8 A load and mains present unless told otherwise."""
    return Scenario("test", "", steps, duration_seconds=3600, **rig)


class CountingBus:
    """The simulated bus, counting the word reads the drivers try at each address."""

    def __init__(self, bus: FakeSMBus) -> None:
        self.bus = bus
        self.reads: dict[int, int] = {}

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int:
        self.reads[i2c_addr] = self.reads.get(i2c_addr, 0) + 1
        return self.bus.read_word_data(i2c_addr, register, force)

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None:
        self.bus.write_word_data(i2c_addr, register, value, force)


class Kit:
    """A monitor on a scenario's rig and bus, stepped by hand with a fake clock."""

    def __init__(self, script: Scenario, config: PowerConfig = CONFIG,
                 steps: ShutdownSteps | None = None) -> None:
        self.config = config
        self.runner = ScenarioRunner(script)
        self.bus = CountingBus(self.runner.bus)
        self.now = 0.0
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.statuses: list[PowerStatus] = []
        self.monitor = PowerMonitor(
            build_sensors(config, self.bus), config, steps or ShutdownSteps.inert(),
            on_status=self.statuses.append,
            on_event=lambda event: self.events.append((self.now, event)),
            clock=lambda: self.now)

    @property
    def rig(self) -> PowerRig:
        return self.runner.rig

    async def tick(self, seconds: float | None = None) -> None:
        """Move the clock and the rig on by one poll interval (or ``seconds``), then poll."""
        step = self.config.poll_interval_s if seconds is None else seconds
        self.now += step
        self.runner.advance(step)
        await self.monitor.poll()

    async def polls_until(self, done: Callable[[], bool], limit: int,
                          seconds: float | None = None) -> int:
        """Polls until ``done()``; fails after ``limit``."""
        for polls in range(1, limit + 1):
            await self.tick(seconds)
            if done():
                return polls
        raise AssertionError(f"not done after {limit} polls; events: {self.of_type()}")

    def of_type(self, *kinds: str) -> list[dict[str, Any]]:
        return [event for _, event in self.events if not kinds or event["type"] in kinds]

    def transitions(self) -> list[tuple[str | None, str]]:
        return [(event["from"], event["to"]) for event in self.of_type("power")]

    def close(self) -> None:
        self.monitor.close()


# -- on line, on battery ------------------------------------------------------------------


def test_mains_lost_is_on_battery_within_debounce_polls_and_back_on_line() -> None:
    async def scenario() -> None:
        kit = Kit(scripted())
        await kit.tick()
        assert kit.transitions() == [(None, "OL")]
        assert kit.monitor.status is not None and kit.monitor.status.feeding == "mains"
        kit.rig.mains_present = False
        polls = await kit.polls_until(lambda: len(kit.transitions()) == 2, limit=10)
        assert polls == CONFIG.debounce_polls
        assert kit.transitions()[-1] == ("OL", "OB")
        assert kit.of_type("power")[-1]["state"] == "OB DISCHRG"
        status = kit.monitor.status
        assert status is not None and status.feeding == "battery"
        assert status.mains.present is False and status.battery.present is True
        kit.rig.mains_present = True
        polls = await kit.polls_until(lambda: len(kit.transitions()) == 3, limit=10)
        assert polls == CONFIG.debounce_polls
        assert kit.transitions()[-1] == ("OB", "OL")
        assert kit.monitor.status is not None and kit.monitor.status.feeding == "mains"
        kit.close()

    asyncio.run(scenario())


def test_a_glitch_shorter_than_the_debounce_is_no_transition() -> None:
    async def scenario() -> None:
        kit = Kit(scripted())
        await kit.tick()
        for _ in range(5):
            kit.rig.mains_present = False
            await kit.tick()
            kit.rig.mains_present = True
            await kit.tick()
        assert kit.transitions() == [(None, "OL")]
        kit.close()

    asyncio.run(scenario())


def test_brown_out_scenariogoes_on_battery_and_back_through_a_recalibration() -> None:
    async def scenario() -> None:
        kit = Kit(SCENARIOS["brown_out"])
        await kit.polls_until(lambda: kit.runner.now >= 12, limit=200)
        assert kit.transitions() == [(None, "OL"), ("OL", "OB"), ("OB", "OL")]
        went_on_battery, came_back = (at for at, event in kit.events if event["type"] == "power"
                                      and event["from"] is not None)
        assert 5.0 < went_on_battery <= 5.0 + CONFIG.poll_interval_s * (CONFIG.debounce_polls + 1)
        assert 8.0 < came_back <= 8.0 + CONFIG.poll_interval_s * (CONFIG.debounce_polls + 1)
        assert kit.of_type("sensor_fault") == []
        kit.close()

    asyncio.run(scenario())


def test_low_battery_on_battery_is_a_warning_without_lb_or_a_shutdown() -> None:
    async def scenario() -> None:
        # 3 Ah at 0.8 A load drains about 41 %/h: 32 minutes left at 22 %, so the percent
        # threshold (20 %) is crossed first, after about three minutes.
        kit = Kit(scripted(Step(0, "mains_off"), battery_percent=22))
        await kit.polls_until(lambda: bool(kit.of_type("battery_level")[1:]), limit=400,
                              seconds=1.0)
        assert [(e["from"], e["to"]) for e in kit.of_type("battery_level")] == [
            (None, "ok"), ("ok", "low")]
        status = kit.monitor.status
        assert status is not None and status.state == "OB DISCHRG"  # LB means going down now
        assert status.battery_level == "low"
        assert status.ups.percent is not None and 19 < status.ups.percent <= 20
        assert status.ups.minutes_left is not None and status.ups.minutes_left > 15
        assert kit.of_type("shutdown_pending", "shutdown") == []
        kit.close()

    asyncio.run(scenario())


# -- the shutdown -------------------------------------------------------------------------


class Daemon:
    """The daemon's side of a shutdown: a real store with an outbox, an uplink that relays."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(tmp_path / "dropkit.db")
        self.store.open()
        self.calls: list[str] = []
        self.taking_orders = True
        self.final: PowerStatus | None = None
        self.calls_file = tmp_path / "shutdown-calls"
        script = tmp_path / "fake-poweroff"
        script.write_text(f'#!/bin/sh\necho "$@" >> {self.calls_file}\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        self.command = f"{script} poweroff --no-wall"

    async def queue_orders(self, count: int) -> None:
        for n in range(count):
            await self.store.write(lambda db, n=n: db.execute(
                "INSERT INTO outbox (kind, key, payload, created_at) VALUES "
                "('order', ?, '{}', 'now')", (f"order-{n}",)))

    async def pending(self) -> int:
        return await self.store.read(lambda db: db.execute(
            "SELECT count(*) FROM outbox WHERE relayed_at IS NULL").fetchone()[0])

    def steps(self) -> ShutdownSteps:
        async def stop_taking_orders() -> None:
            self.calls.append("stop_taking_orders")
            self.taking_orders = False

        async def flush_outbox(timeout_s: float) -> bool:
            self.calls.append("flush_outbox")
            await self.store.write(lambda db: db.execute(
                "UPDATE outbox SET relayed_at = 'now' WHERE relayed_at IS NULL"))
            return await self.pending() == 0

        async def publish_final(status: PowerStatus) -> None:
            self.calls.append("publish_final")
            self.final = status

        async def close_store() -> None:
            self.calls.append("close_store")
            self.store.close()

        return ShutdownSteps(stop_taking_orders, flush_outbox, publish_final, close_store)

    def commands_run(self) -> list[str]:
        return self.calls_file.read_text().splitlines() if self.calls_file.exists() else []


def test_drain_to_critical_runs_the_shutdown_sequence_exactly_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = Daemon(tmp_path)
        await daemon.queue_orders(3)
        pending_before = await daemon.pending()
        config = PowerConfig(shutdown_command=daemon.command)
        kit = Kit(SCENARIOS["drain_to_critical"], config, daemon.steps())
        await kit.polls_until(lambda: kit.monitor.shutdown_task is not None, limit=1000)
        assert kit.monitor.shutdown_task is not None
        report = await kit.monitor.shutdown_task
        for _ in range(100):  # the kit polls on until the power goes: nothing runs twice
            await kit.tick()

        assert report.ok, report
        assert [step.name for step in report.steps] == [
            "stop_taking_orders", "flush_outbox", "publish_final", "close_store",
            "mark_power_down", "command"]
        assert daemon.calls == ["stop_taking_orders", "flush_outbox", "publish_final",
                                "close_store"]
        assert daemon.commands_run() == ["poweroff --no-wall"]
        assert pending_before == 3 and report.steps[1].detail == "True"  # the outbox flushed
        assert not daemon.taking_orders
        assert daemon.final is not None and daemon.final.flags >= {"FSD", "OB", "LB"}
        assert daemon.final.shutdown_in_s == 0.0

        kinds = [event["type"] for event in kit.of_type()]
        assert kinds.count("shutdown_pending") == 1 and kinds.count("shutdown") == 1
        pending_at, pending = next((at, e) for at, e in kit.events
                                   if e["type"] == "shutdown_pending")
        shutdown_at, shutdown = next((at, e) for at, e in kit.events if e["type"] == "shutdown")
        assert pending["reason"] == shutdown["reason"] == "battery_critical"
        assert "min left" in pending["detail"]  # 25 % at 3 A: under 5 minutes
        assert pending["in_s"] == config.shutdown_delay_s
        assert shutdown_at - pending_at == pytest.approx(config.shutdown_delay_s,
                                                         abs=config.poll_interval_s * 1.5)
        assert kit.transitions()[-1][1] == "FSD OB LB"
        assert kit.runner.rig.kit_powered  # it stopped before the pack's protection cut off
        kit.close()

    asyncio.run(scenario())


def test_mains_back_during_the_countdown_cancels_the_shutdown(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = Daemon(tmp_path)
        config = PowerConfig(shutdown_command=daemon.command)
        # The gauge powers up with RI set: believed after gauge_confirm_s (5 s), critical once
        # held for level_hold_s (5 s), so the countdown runs from about 10 s to 20 s; mains
        # back at 16 s is stable (mains_stable_s, 5 s) at about 21 s, and cancels it then.
        kit = Kit(scripted(Step(1, "mains_off"), Step(16, "mains_on"), battery_percent=6),
                  config, daemon.steps())
        await kit.polls_until(lambda: kit.runner.now >= 40, limit=400)
        assert [event["type"] for event in kit.of_type("shutdown_pending", "shutdown",
                                                       "shutdown_cancelled")] == [
            "shutdown_pending", "shutdown_cancelled"]
        assert kit.monitor.shutdown_task is None
        assert daemon.calls == [] and daemon.commands_run() == []
        status = kit.monitor.status
        assert status is not None and status.shutdown_in_s is None
        assert "OL" in status.flags and not status.flags & {"LB", "FSD"}
        assert status.battery_level == "critical"  # still: on mains it is no reason to stop
        daemon.store.close()
        kit.close()

    asyncio.run(scenario())


def test_countdown_shows_in_the_status() -> None:
    async def scenario() -> None:
        kit = Kit(scripted(Step(0, "mains_off"), battery_percent=6))
        await kit.polls_until(lambda: bool(kit.of_type("shutdown_pending")), limit=150)
        await kit.tick(1.0)
        status = kit.monitor.status
        assert status is not None and status.shutdown_in_s is not None
        assert CONFIG.shutdown_delay_s - 2 < status.shutdown_in_s < CONFIG.shutdown_delay_s
        kit.close()

    asyncio.run(scenario())


def test_a_failing_step_or_command_does_not_stop_the_sequence(tmp_path: Path) -> None:
    async def scenario() -> None:
        done: list[str] = []

        async def stuck(timeout_s: float) -> bool:
            await asyncio.sleep(3600)
            return True

        async def broken(status: PowerStatus) -> None:
            raise ConnectionError("broker gone")

        async def close_store() -> None:
            done.append("close_store")

        steps = dataclasses.replace(ShutdownSteps.inert(), flush_outbox=stuck,
                                    publish_final=broken, close_store=close_store)
        kit = Kit(scripted())
        await kit.tick()
        status = kit.monitor.status
        assert status is not None
        kit.close()
        sequence = ShutdownSequence(steps, "false", step_timeout_s=0.05)
        report = await sequence.run(status)
        outcomes = {step.name: step for step in report.steps}
        assert not report.ok
        assert "timed out" in outcomes["flush_outbox"].detail
        assert "broker gone" in outcomes["publish_final"].detail
        assert done == ["close_store"] and outcomes["close_store"].ok
        assert not outcomes["command"].ok and "status 1" in outcomes["command"].detail
        with pytest.raises(RuntimeError, match="only once"):
            await sequence.run(status)

        missing = ShutdownSequence(ShutdownSteps.inert(), str(tmp_path / "no-such-command"),
                                   step_timeout_s=1)
        report = await missing.run(status)
        assert "FileNotFoundError" in report.steps[-1].detail

    asyncio.run(scenario())


def test_requested_shutdown_skips_the_countdown_and_runs_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        daemon = Daemon(tmp_path)
        kit = Kit(scripted(), PowerConfig(shutdown_command=daemon.command), daemon.steps())
        await kit.tick()
        kit.monitor.request_shutdown("panel_long_press")
        kit.monitor.request_shutdown("panel_long_press")
        assert kit.monitor.shutdown_task is not None
        await kit.monitor.shutdown_task
        assert [e["reason"] for e in kit.of_type("shutdown")] == ["panel_long_press"]
        assert daemon.commands_run() == ["poweroff --no-wall"]
        assert kit.monitor.status is not None and kit.monitor.status.state.startswith("FSD OL")
        kit.close()

    asyncio.run(scenario())


# -- sensor faults ------------------------------------------------------------------------


def test_sensor_unplugged_is_a_fault_and_recovers_when_plugged_back() -> None:
    async def scenario() -> None:
        kit = Kit(SCENARIOS["sensor_unplugged"])  # battery INA226 off at 10 s, back at 20 s
        faulted: list[PowerStatus] = []
        while kit.runner.now < 30:
            await kit.tick()
            if kit.monitor.status is not None and kit.monitor.status.sensor_faults:
                faulted.append(kit.monitor.status)

        (fault_at, fault), (recovered_at, recovered) = [
            (at, e) for at, e in kit.events if e["type"].startswith("sensor_")]
        assert fault["type"] == "sensor_fault" and fault["sensor"] == "battery"
        assert fault["errno"] == errno.EREMOTEIO and "INA226 at 0x41" in fault["error"]
        assert 10 < fault_at < 15
        assert recovered["type"] == "sensor_recovered" and recovered["sensor"] == "battery"
        assert 20 < recovered_at < 20 + 5.5  # the longest backoff is 5 s
        assert faulted and all(status.sensor_faults == ("battery",) for status in faulted)
        assert all(status.battery.volts is None and status.mains.volts is not None
                   and status.ups.percent is not None for status in faulted)
        assert kit.transitions() == [(None, "OL")]  # a fault is no power event
        last = kit.monitor.status
        assert last is not None and last.sensor_faults == () and last.battery.volts is not None
        kit.close()

    asyncio.run(scenario())


def test_transient_bus_errors_are_retried_quietly() -> None:
    async def scenario() -> None:
        kit = Kit(scripted())
        await kit.tick()
        kit.runner.bus.inject_errors(MAINS_MONITOR_ADDRESS, count=FAULT_AFTER_FAILURES - 1)
        for _ in range(20):
            await kit.tick()
        assert [event["type"] for event in kit.of_type()] == ["power"]
        assert kit.monitor.status is not None and kit.monitor.status.sensor_faults == ()
        kit.close()

    asyncio.run(scenario())


def test_a_failing_sensor_backs_off_and_mains_loss_still_shows_through_the_battery() -> None:
    async def scenario() -> None:
        kit = Kit(scripted())
        await kit.tick()
        kit.runner.bus.set_error_rate(1.0, errno.EIO, addresses=[MAINS_MONITOR_ADDRESS])
        kit.bus.reads.clear()
        for _ in range(100):  # ten seconds of polls
            await kit.tick()
        # Without backoff, 100 tries; with it (0.1, 0.2, 0.4 ... 5 s), a handful.
        assert kit.bus.reads[MAINS_MONITOR_ADDRESS] <= 10
        assert [e["sensor"] for e in kit.of_type("sensor_fault")] == ["mains"]
        assert kit.of_type("sensor_fault")[0]["errno"] == errno.EIO
        assert kit.transitions() == [(None, "OL")]  # an unreadable sensor is not lost mains

        kit.rig.mains_present = False  # the battery starts to discharge: that tells
        await kit.polls_until(lambda: ("OL", "OB") in kit.transitions(), limit=30)
        kit.rig.mains_present = True
        kit.runner.bus.set_error_rate(0.0)
        await kit.polls_until(lambda: bool(kit.of_type("sensor_recovered")), limit=60)
        await kit.polls_until(lambda: ("OB", "OL") in kit.transitions(), limit=10)
        kit.bus.reads.clear()
        await kit.tick()
        assert kit.bus.reads[MAINS_MONITOR_ADDRESS] == 5  # every poll again: INA219 read()
        kit.close()

    asyncio.run(scenario())


def test_on_battery_with_no_charge_reading_goes_critical_after_dead_time() -> None:
    async def scenario() -> None:
        config = PowerConfig(dead_time_s=5, shutdown_command="true")
        kit = Kit(scripted(Step(1, "mains_off"), Step(2, "unplug", FUEL_GAUGE_ADDRESS)), config)
        await kit.polls_until(lambda: kit.monitor.shutdown_task is not None, limit=400)
        (fault_at, _), = [(at, e) for at, e in kit.events if e["type"] == "sensor_fault"]
        (pending_at, pending), = [(at, e) for at, e in kit.events
                                  if e["type"] == "shutdown_pending"]
        assert pending["reason"] == "battery_level_unknown"
        assert pending_at - fault_at == pytest.approx(config.dead_time_s, abs=0.15)
        # The commit names the same reason (docs/power.md), not battery_critical.
        assert [e["reason"] for e in kit.of_type("shutdown")] == ["battery_level_unknown"]
        assert kit.monitor.shutdown_task is not None
        await kit.monitor.shutdown_task
        kit.close()

    asyncio.run(scenario())


def test_a_missing_i2c_bus_is_a_fault_not_a_crash(tmp_path: Path) -> None:
    async def scenario() -> None:
        events: list[dict[str, Any]] = []
        now = [0.0]
        bus = LazySMBus(str(tmp_path / "i2c-9"))
        monitor = PowerMonitor(build_sensors(CONFIG, bus), CONFIG, ShutdownSteps.inert(),
                               on_event=events.append, clock=lambda: now[0])
        for _ in range(100):
            now[0] += CONFIG.poll_interval_s
            await monitor.poll()
        assert sorted(e["sensor"] for e in events) == ["battery", "gauge", "mains"]
        assert all(e["type"] == "sensor_fault" and e["errno"] == errno.ENOENT for e in events)
        assert monitor.status is not None and monitor.status.state == "unknown"
        assert monitor.status.feeding is None
        monitor.close()
        bus.close()

    asyncio.run(scenario())


# -- the power-fail line ------------------------------------------------------------------


def test_power_fail_gpio_goes_on_battery_at_once_without_a_poll() -> None:
    async def scenario() -> None:
        factory = MockFactory()
        sim = SimulatedPower()
        config = PowerConfig(fail_gpio=6, poll_interval_s=5, sample_interval_s=5)
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        monitor = PowerMonitor(build_sensors(config, sim.bus), config, ShutdownSteps.inert(),
                               on_event=events.put_nowait, pin_factory=factory)
        tasks = [asyncio.create_task(monitor.watch_fail_line()),
                 asyncio.create_task(monitor.run())]
        assert (await asyncio.wait_for(events.get(), 5))["to"] == "OL"
        await asyncio.to_thread(factory.pin(6).drive_high)  # on another thread, as gpiozero
        event = await asyncio.wait_for(events.get(), 5)
        assert (event["from"], event["to"]) == ("OL", "OB")
        assert monitor.polls == 1  # no poll came between: the line alone did it
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        monitor.close()

    asyncio.run(scenario())


# -- the simulated kit, in real time ------------------------------------------------------


def test_simulated_power_drives_the_monitor_in_real_time() -> None:
    async def scenario() -> None:
        sim = SimulatedPower(speed=50)
        config = PowerConfig(poll_interval_s=0.02, sample_interval_s=0.1)
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        monitor = PowerMonitor(build_sensors(config, sim.bus), config, ShutdownSteps.inert(),
                               on_event=events.put_nowait)
        tasks = [asyncio.create_task(sim.run()), asyncio.create_task(monitor.run())]

        async def next_event(kind: str) -> dict[str, Any]:
            while (event := await asyncio.wait_for(events.get(), 5))["type"] != kind:
                pass
            return event

        assert (await next_event("power"))["to"] == "OL"
        sim.pull_mains()
        assert (await next_event("power"))["to"] == "OB"
        sim.restore_mains()
        assert (await next_event("power"))["to"] == "OL"
        sim.unplug("battery")
        assert sim.snapshot()["unplugged"] == ["battery"]
        assert (await next_event("sensor_fault"))["sensor"] == "battery"
        sim.plug("battery")
        assert (await next_event("sensor_recovered"))["sensor"] == "battery"
        sim.run_scenario("mains_lost")  # mains off at 5 s of rig time: 0.1 s at 50 times
        assert (await next_event("power"))["to"] == "OB"
        assert sim.snapshot()["scenario"] == "mains_lost"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        monitor.close()

    asyncio.run(scenario())


def test_simulated_power_refuses_what_it_cannot_do() -> None:
    sim = SimulatedPower()
    with pytest.raises(ValueError, match="unknown power scenario"):
        sim.run_scenario("meteor")
    with pytest.raises(ValueError, match="was not unplugged"):
        sim.plug("gauge")
    sim.unplug("gauge")
    with pytest.raises(ValueError, match="not on the bus"):
        sim.unplug("gauge")
    with pytest.raises(ValueError, match="unknown sensor"):
        sim.unplug("toaster")  # type: ignore[arg-type]


# -- config and telemetry -----------------------------------------------------------------


def test_config_fields_fit_the_config_parser_and_their_checks() -> None:
    for spec in dataclasses.fields(PowerConfig):
        assert spec.type in ("int", "str", "bool", "float"), spec.name
        if check := spec.metadata.get("check"):
            assert check[1](spec.default), spec.name
    checks = {spec.name: spec.metadata["check"] for spec in dataclasses.fields(PowerConfig)
              if "check" in spec.metadata}
    assert not checks["mains_chip"][1]("ina3221")
    assert not checks["mains_address"][1](0x80)
    assert not checks["shutdown_command"][1]("'unbalanced")
    assert not checks["poll_interval_s"][1](0.0)


@pytest.mark.parametrize(("change", "message"), [
    ({"critical_minutes": 15}, r"critical_minutes: expected below low_minutes \(15\)"),
    ({"sample_interval_s": 0.05}, "sample_interval_s: expected at least poll_interval_s"),
    ({"mains_max_amps": 0.001}, "mains_max_amps: expected a current the ina219 can calibrate"),
])
def test_config_checks_across_fields(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PowerConfig(**change)


def test_current_monitors_can_be_left_out() -> None:
    config = PowerConfig(mains_chip="none", battery_chip="none")
    sensors = build_sensors(config, SimulatedPower().bus)
    assert isinstance(sensors, PowerSensors)
    assert sensors.mains is None and sensors.battery is None and sensors.gauge is not None


def test_telemetry_matches_its_json_schema(tmp_path: Path) -> None:
    schema = schemas.load("telemetry-power")
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())

    def published(status: dict[str, Any]) -> dict[str, Any]:
        """What the daemon and uplink put on the broker: the status plus their own keys."""
        return {"kit_id": "kit-1", **status, "mode": "offline", "queue_depth": 0}

    async def scenario() -> list[PowerStatus]:
        daemon = Daemon(tmp_path)
        kit = Kit(scripted(Step(1, "mains_off"), Step(12, "unplug", FUEL_GAUGE_ADDRESS),
                           battery_percent=15),
                  PowerConfig(shutdown_command=daemon.command, dead_time_s=3), daemon.steps())
        await kit.polls_until(lambda: kit.monitor.shutdown_task is not None, limit=300)
        assert kit.monitor.shutdown_task is not None
        await kit.monitor.shutdown_task
        kit.close()
        return kit.statuses

    statuses = asyncio.run(scenario())
    states = {status.state for status in statuses}
    assert {"OL CHRG", "OB DISCHRG", "FSD OB DISCHRG LB"} <= states, states
    assert {status.battery_level for status in statuses} >= {None, "low"}
    assert any(status.sensor_faults for status in statuses)
    for status in statuses:
        validator.validate(published(status.to_dict()))
    # Without a power monitor the daemon sends what little it knows.
    validator.validate(published({"ts": "2026-01-01T00:00:00+00:00", "seq": 1,
                                  "state": UNKNOWN_STATE, "feeding": None, "sources": {},
                                  "ups": None}))
    for wrong in ({"state": "ONLINE"}, {"ts": 1764262600.1}, {"sensor_faults": ["fridge"]},
                  {"sources": {"solar": statuses[0].to_dict()["sources"]["mains"]}}):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(published({**statuses[0].to_dict(), **wrong}))
    with pytest.raises(jsonschema.ValidationError, match="kit_id"):
        validator.validate(statuses[0].to_dict())


def test_the_schema_knows_every_nut_flag_in_order() -> None:
    state = schemas.load("telemetry-power")["properties"]["state"]
    validator = jsonschema.Draft202012Validator(state)
    for flag in NUT_FLAGS:
        validator.validate(flag)
    validator.validate(" ".join(NUT_FLAGS))
    assert not validator.is_valid("OL  CHRG") and not validator.is_valid("ol")


def test_docs_link_the_schema_rather_than_repeat_it() -> None:
    text = (Path(__file__).parent.parent / "docs" / "power.md").read_text()
    section = text.split("### Schema", 1)[1].split("\n## ", 1)[0]
    assert "schemas/telemetry-power.schema.json" in section
    assert "```json" not in section
