"""The power rig and its scenarios, read through the real drivers on the simulated bus."""

from __future__ import annotations

import dataclasses
import doctest
import errno
import itertools
from collections.abc import Callable

import pytest

import simulators.power_rig
from hw.power.current import PowerReading
from hw.power.ina219 import INA219
from hw.power.ina226 import INA226
from hw.power.max17048 import MAX17048, GaugeReading
from hw.power.words import SensorError
from simulators.power_rig import (
    BATTERY_MONITOR_ADDRESS,
    BATTERY_SHUNT_OHMS,
    FUEL_GAUGE_ADDRESS,
    MAINS_MONITOR_ADDRESS,
    MAINS_SHUNT_OHMS,
    SCENARIOS,
    BatteryPack,
    PowerRig,
    Scenario,
    ScenarioRunner,
    Step,
    build_sim_bus,
)
from simulators.smbus import FakeSMBus


class Kit:
    """The three drivers as the agent would set them up on a (simulated) bus."""

    def __init__(self, bus: FakeSMBus) -> None:
        self.mains = INA219(bus, MAINS_MONITOR_ADDRESS, shunt_ohms=MAINS_SHUNT_OHMS,
                            max_expected_amps=3.2)
        self.battery = INA226(bus, BATTERY_MONITOR_ADDRESS, shunt_ohms=BATTERY_SHUNT_OHMS,
                              max_expected_amps=4.096)
        self.gauge = MAX17048(bus, FUEL_GAUGE_ADDRESS)
        self.mains.configure()
        self.battery.configure()

    def read(self) -> tuple[PowerReading, PowerReading, GaugeReading]:
        return self.mains.read(), self.battery.read(), self.gauge.read()


def test_sim_bus_has_the_three_chips() -> None:
    bus = build_sim_bus(PowerRig())
    assert bus.addresses() == [0x36, 0x40, 0x41]
    kit = Kit(bus)
    assert kit.battery.identify() and kit.gauge.identify()


def test_on_mains_with_a_full_battery() -> None:
    kit = Kit(build_sim_bus(PowerRig()))
    mains, battery, gauge = kit.read()
    # The load alone: 0.8 A at 5.1 V, nothing to charge.
    assert mains.volts == pytest.approx(5.1)
    assert mains.amps == pytest.approx(0.8, abs=1e-3)
    assert battery.amps == pytest.approx(0.0)
    assert battery.volts == pytest.approx(4.2)        # a full cell at rest
    assert gauge.percent == 100.0


def test_mains_lost_puts_the_load_on_the_battery() -> None:
    rig = PowerRig()
    kit = Kit(build_sim_bus(rig))
    rig.mains_present = False
    rig.advance(60)
    mains, battery, gauge = kit.read()
    assert mains.volts == 0.0 and mains.amps == 0.0
    # The converter draws 0.8 A * 5.1 V / 0.9 = 4.533 W from the pack: I * V_terminal.
    assert battery.amps * battery.volts == pytest.approx(0.8 * 5.1 / 0.9, rel=2e-3)
    assert battery.amps > 1.0
    assert gauge.rate_percent_per_hour < 0
    assert gauge.percent < 100.0


def test_battery_charges_when_mains_returns() -> None:
    rig = PowerRig(BatteryPack(state_of_charge=0.5))
    kit = Kit(build_sim_bus(rig))
    rig.mains_present = False
    rig.advance(600)
    low = kit.gauge.read().percent
    rig.mains_present = True
    rig.advance(600)
    mains, battery, gauge = kit.read()
    assert gauge.percent > low
    # Constant current below 80 %: 1 A into the pack reads as -1 A on the battery INA226,
    # and CRATE = 1 A / 3 Ah = 33.3 %/hr -> 33.33 / 0.208 = 160 counts -> 33.28 %/hr.
    assert battery.amps == pytest.approx(-1.0, abs=1e-3)
    assert gauge.rate_percent_per_hour == pytest.approx(33.28)
    assert mains.amps > 0.8                            # the load and the charger


def test_charging_tapers_and_stops_when_full() -> None:
    rig = PowerRig(BatteryPack(state_of_charge=0.9))
    assert rig.battery_amps == pytest.approx(-0.5)     # (1 - 0.9) / 0.2 of 1 A
    rig.advance(6 * 3600)
    assert rig.battery.state_of_charge == 1.0
    assert rig.battery_amps == 0.0


def test_battery_pack_curve_and_ageing() -> None:
    pack = BatteryPack(state_of_charge=0.55, cells_in_series=2)
    # Halfway between 3.82 V (50 %) and 3.87 V (60 %), times two cells.
    assert pack.open_circuit_volts() == pytest.approx(2 * 3.845)
    aged = BatteryPack(health=0.5)
    assert aged.capacity_ah == pytest.approx(1.5)
    assert aged.resistance_ohms == pytest.approx(0.1)
    with pytest.raises(ValueError):
        BatteryPack(health=0.0)


def test_two_cell_pack_reports_per_cell_volts_on_the_gauge() -> None:
    kit = Kit(build_sim_bus(PowerRig(BatteryPack(cells_in_series=2))))
    _, battery, gauge = kit.read()
    assert battery.volts == pytest.approx(8.4)
    assert gauge.cell_volts == pytest.approx(4.2, abs=1e-4)


def test_rig_time_only_moves_forward() -> None:
    with pytest.raises(ValueError):
        PowerRig().advance(-1)


# -- scenarios ----------------------------------------------------------------------------

def test_named_scenarios() -> None:
    assert set(SCENARIOS) == {"mains_lost", "brown_out", "aged_battery", "sensor_unplugged",
                              "drain_to_critical"}


@pytest.mark.parametrize(("step", "message"), [
    (lambda: Step(1, "explode"), "unknown scenario action"),
    (lambda: Step(1, "unplug"), "takes a value"),
    (lambda: Step(1, "mains_off", 3.0), "takes no value"),
    (lambda: Step(-1, "mains_off"), "before the start"),
])
def test_steps_are_checked(step: Callable[[], Step], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        step()


def test_mains_lost_at_exactly_five_seconds() -> None:
    scenario = dataclasses.replace(SCENARIOS["mains_lost"], battery_percent=90)
    in_one_go, one_by_one = ScenarioRunner(scenario), ScenarioRunner(scenario)
    assert in_one_go.advance(10) == [Step(5, "mains_off")]
    for _ in range(10):
        one_by_one.advance(1)
    assert in_one_go.applied == [(5.0, Step(5, "mains_off"))]
    assert in_one_go.rig.battery.state_of_charge == pytest.approx(
        one_by_one.rig.battery.state_of_charge, abs=1e-12)
    # Five seconds of charging at 1 A, then five of discharge: not ten of either.
    assert in_one_go.rig.battery.state_of_charge < 0.9


def test_mains_lost_scenario_through_the_drivers() -> None:
    runner = ScenarioRunner(SCENARIOS["mains_lost"])
    kit = Kit(runner.bus)
    sources = []
    for now in runner.run(step_seconds=1.0):
        mains, battery, _ = kit.read()
        sources.append((now, mains.volts > 4.6, battery.amps > 0.5))
    assert all(on_mains and not on_battery for now, on_mains, on_battery in sources if now < 5)
    assert all(on_battery and not on_mains for now, on_mains, on_battery in sources if now >= 5)
    assert runner.finished and runner.now == 60.0


def test_brown_out_scenario_recalibrates_the_mains_ina219_once() -> None:
    runner = ScenarioRunner(SCENARIOS["brown_out"])
    kit = Kit(runner.bus)
    timeline = []
    for now in runner.run():
        mains, battery, _ = kit.read()
        timeline.append((now, mains, battery))
    recalibrated = [now for now, mains, _ in timeline if mains.recalibrated]
    assert recalibrated == [5.0]
    sag = [(mains, battery) for now, mains, battery in timeline if 5 <= now < 8]
    assert all(mains.volts == pytest.approx(4.2) and mains.amps == 0.0 for mains, _ in sag)
    assert all(battery.amps > 0.5 for _, battery in sag)       # the UPS is on battery
    after = [(mains, battery) for now, mains, battery in timeline if now >= 8]
    assert all(mains.volts == pytest.approx(5.1) and battery.amps <= 0 for mains, battery in after)


def test_sensor_unplugged_scenario() -> None:
    runner = ScenarioRunner(SCENARIOS["sensor_unplugged"])
    kit = Kit(runner.bus)
    missing, recalibrated = [], []
    for now in runner.run():
        kit.mains.read()
        kit.gauge.read()
        try:
            if kit.battery.read().recalibrated:
                recalibrated.append(now)
        except SensorError as error:
            assert error.errno == errno.EREMOTEIO
            assert error.address == BATTERY_MONITOR_ADDRESS
            missing.append(now)
    assert missing == [float(t) for t in range(10, 20)]
    assert recalibrated == [20.0]


def test_aged_battery_drains_faster_and_sags_more() -> None:
    def run(scenario: Scenario) -> tuple[float, float]:
        runner = ScenarioRunner(scenario)
        gauge = MAX17048(runner.bus)
        for _ in runner.run(step_seconds=10):
            pass
        reading = gauge.read()
        return reading.percent, reading.cell_volts

    aged = SCENARIOS["aged_battery"]
    aged_percent, aged_volts = run(aged)
    fresh_percent, fresh_volts = run(dataclasses.replace(aged, battery_health=1.0))
    # 595 s on battery at ~2.2 A: about 12 % of 1.8 Ah aged, about 7 % of 3 Ah fresh.
    assert 100 - aged_percent > 1.5 * (100 - fresh_percent)
    assert aged_volts < fresh_volts


def test_drain_to_critical_percent_falls_monotonically_to_cut_off() -> None:
    runner = ScenarioRunner(SCENARIOS["drain_to_critical"])
    kit = Kit(runner.bus)
    kit.gauge.clear_alerts()
    percents, soc_low_seen, cut_off_at = [], False, None
    for now in runner.run(step_seconds=5.0):
        _, battery, gauge = kit.read()
        percents.append(gauge.percent)
        soc_low_seen |= gauge.soc_low
        if cut_off_at is None and battery.volts == 0.0:
            cut_off_at = now
    # From t=5 s (the first sample, when mains goes) the percent only falls.
    assert all(later <= earlier for earlier, later in itertools.pairwise(percents))
    assert percents[0] == pytest.approx(25, abs=0.5) and percents[-1] < 5
    assert soc_low_seen                                  # crossed the 4 % empty alert
    assert cut_off_at is not None and not runner.rig.kit_powered


def test_scenarios_are_deterministic() -> None:
    def readings() -> list[tuple[PowerReading, PowerReading, GaugeReading]]:
        runner = ScenarioRunner(SCENARIOS["drain_to_critical"])
        kit = Kit(runner.bus)
        return [kit.read() for _ in runner.run(step_seconds=20.0)]

    assert readings() == readings()


def test_docstring_examples_run() -> None:
    result = doctest.testmod(simulators.power_rig)
    assert result.attempted > 0 and result.failed == 0
