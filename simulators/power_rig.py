"""A power rig for the simulated kit: mains, a UPS with charger, a Li-ion pack and the load.

The rig is plain physics with its own clock: time moves only when :meth:`PowerRig.advance`
is called, so every run is deterministic. It feeds the chip models of
:mod:`simulators.power_chips`, wired on a :class:`simulators.smbus.FakeSMBus` by
:func:`build_sim_bus`:

- INA219 at 0x40 on the mains input (0.1 ohm shunt): mains volts, and the mains current
  while mains feeds the kit (load plus charger).
- INA226 at 0x41 on the battery (0.01 ohm shunt, wired so that discharge reads positive):
  pack volts and the discharge current on battery, a negative current while charging.
- MAX17048 at 0x36 on the cell: cell volts, state of charge, charge rate.

Scenarios script the rig and the bus as data: a list of :class:`Step` (seconds, action,
value), run by :class:`ScenarioRunner`. :data:`SCENARIOS` holds the named drills.

One thread should advance the rig; the fake bus serialises reads from others.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from simulators.power_chips import (
    CellInput,
    INA219Model,
    INA226Model,
    MAX17048Model,
    PowerChipModel,
    ShuntInput,
)
from simulators.smbus import FakeSMBus, I2CDevice

__all__ = [
    "ACTIONS",
    "BATTERY_MONITOR_ADDRESS",
    "BATTERY_SHUNT_OHMS",
    "FUEL_GAUGE_ADDRESS",
    "LI_ION_OCV_CURVE",
    "MAINS_MONITOR_ADDRESS",
    "MAINS_SHUNT_OHMS",
    "SCENARIOS",
    "BatteryPack",
    "PowerRig",
    "Scenario",
    "ScenarioRunner",
    "Step",
    "build_sim_bus",
]

MAINS_MONITOR_ADDRESS = 0x40
BATTERY_MONITOR_ADDRESS = 0x41
FUEL_GAUGE_ADDRESS = 0x36
MAINS_SHUNT_OHMS = 0.1
BATTERY_SHUNT_OHMS = 0.01

LI_ION_OCV_CURVE: tuple[tuple[float, float], ...] = (
    (0.00, 3.00), (0.05, 3.45), (0.10, 3.60), (0.20, 3.69), (0.30, 3.74), (0.40, 3.78),
    (0.50, 3.82), (0.60, 3.87), (0.70, 3.93), (0.80, 4.00), (0.90, 4.08), (1.00, 4.20),
)
"""Open-circuit volts of one Li-ion (NMC) cell against state of charge (0..1), at rest."""


@dataclass
class BatteryPack:
    """Li-ion cells in series: open-circuit voltage from a curve, an internal resistance, and
    a capacity that ageing shrinks."""

    cells_in_series: int = 1
    rated_capacity_mah: float = 3000.0
    health: float = 1.0
    """Ageing factor: the fraction of rated capacity left; resistance grows as 1 / health."""
    state_of_charge: float = 1.0
    """Fraction (0..1) of the aged capacity that is stored."""
    cell_resistance_ohms: float = 0.05
    ocv_curve: tuple[tuple[float, float], ...] = LI_ION_OCV_CURVE

    def __post_init__(self) -> None:
        if self.cells_in_series < 1 or self.rated_capacity_mah <= 0:
            raise ValueError("a pack needs at least one cell and a positive capacity")
        if not 0 < self.health <= 1 or not 0 <= self.state_of_charge <= 1:
            raise ValueError("health must be within (0, 1] and state_of_charge within [0, 1]")

    @property
    def capacity_ah(self) -> float:
        """The capacity left after ageing."""
        return self.rated_capacity_mah * self.health / 1000

    @property
    def resistance_ohms(self) -> float:
        """Internal resistance of the whole pack, grown by ageing."""
        return self.cell_resistance_ohms * self.cells_in_series / self.health

    def open_circuit_volts(self) -> float:
        """Pack volts at rest: the curve interpolated at the state of charge."""
        socs = [soc for soc, _ in self.ocv_curve]
        index = min(max(bisect_left(socs, self.state_of_charge), 1), len(socs) - 1)
        (soc0, volts0), (soc1, volts1) = self.ocv_curve[index - 1], self.ocv_curve[index]
        cell = volts0 + (volts1 - volts0) * (self.state_of_charge - soc0) / (soc1 - soc0)
        return cell * self.cells_in_series

    def terminal_volts(self, discharge_amps: float) -> float:
        """Pack volts under a current (negative while charging)."""
        return self.open_circuit_volts() - discharge_amps * self.resistance_ohms


class PowerRig:
    """Mains, a UPS (charger plus boost converter), a battery pack and the kit's load.

    The kit draws ``load_amps`` at ``rail_volts``. While mains is present at or above
    ``switchover_volts`` it feeds the load and charges the pack (constant current up to 80 %,
    then tapering); otherwise the pack feeds the load through the converter. The pack's
    protection cuts it off when a cell falls below ``cutoff_cell_volts`` under load, and
    releases when mains returns.
    """

    def __init__(self, battery: BatteryPack | None = None, *, mains_present: bool = True,
                 mains_volts: float = 5.1, load_amps: float = 0.8, rail_volts: float = 5.1,
                 charge_amps: float = 1.0, converter_efficiency: float = 0.9,
                 switchover_volts: float = 4.6, cutoff_cell_volts: float = 3.0,
                 max_step_seconds: float = 1.0) -> None:
        self.battery = battery or BatteryPack()
        self.mains_present = mains_present
        self.mains_volts = mains_volts
        self.load_amps = load_amps
        self.rail_volts = rail_volts
        self.charge_amps = charge_amps
        self.converter_efficiency = converter_efficiency
        self.switchover_volts = switchover_volts
        self.cutoff_cell_volts = cutoff_cell_volts
        self.max_step_seconds = max_step_seconds
        self.battery_cut_off = False
        self._now = 0.0

    @property
    def now(self) -> float:
        """Seconds since the rig started."""
        return self._now

    @property
    def on_mains(self) -> bool:
        """Mains is feeding the kit."""
        return self.mains_present and self.mains_volts >= self.switchover_volts

    @property
    def kit_powered(self) -> bool:
        """Something feeds the kit: mains, or a pack its protection has not cut off."""
        return self.on_mains or not self.battery_cut_off

    @property
    def battery_amps(self) -> float:
        """Current out of the pack: positive on battery, negative while charging."""
        if self.on_mains:
            return -self._charging_amps()
        if self.battery_cut_off:
            return 0.0
        # The converter draws P = load / efficiency from the pack: I (OCV - I R) = P.
        watts = self.load_amps * self.rail_volts / self.converter_efficiency
        ocv, resistance = self.battery.open_circuit_volts(), self.battery.resistance_ohms
        discriminant = ocv * ocv - 4 * resistance * watts
        # Beyond the pack's peak power the voltage collapses: the cut-off follows.
        return (ocv - math.sqrt(max(discriminant, 0.0))) / (2 * resistance)

    @property
    def mains_amps(self) -> float:
        """Current drawn from mains: the load and the charger's input."""
        if not self.on_mains:
            return 0.0
        charging = self._charging_amps()
        charger_watts = charging * self.battery.terminal_volts(-charging)
        load_watts = self.load_amps * self.rail_volts
        return (load_watts + charger_watts / self.converter_efficiency) / self.mains_volts

    def _charging_amps(self) -> float:
        soc = self.battery.state_of_charge
        if soc >= 1.0:
            return 0.0
        if soc < 0.8:
            return self.charge_amps
        return self.charge_amps * max(0.05, (1.0 - soc) / 0.2)

    def mains_input(self) -> ShuntInput:
        """What the mains INA219 sees."""
        return ShuntInput(amps=self.mains_amps,
                          bus_volts=self.mains_volts if self.mains_present else 0.0)

    def battery_input(self) -> ShuntInput:
        """What the battery INA226 sees (the pack side of its protection switch)."""
        if self.battery_cut_off and not self.on_mains:
            return ShuntInput(amps=0.0, bus_volts=0.0)
        amps = self.battery_amps
        return ShuntInput(amps=amps, bus_volts=self.battery.terminal_volts(amps))

    def cell_input(self) -> CellInput:
        """What the fuel gauge on the cells concludes."""
        amps = self.battery_amps
        return CellInput(
            cell_volts=self.battery.terminal_volts(amps) / self.battery.cells_in_series,
            percent=self.battery.state_of_charge * 100,
            rate_percent_per_hour=-amps / self.battery.capacity_ah * 100,
        )

    def advance(self, seconds: float) -> None:
        """Move the clock on, integrating the pack's charge in steps of max_step_seconds."""
        if seconds < 0:
            raise ValueError("time does not run backwards")
        end = self._now + seconds
        while self._now < end:
            step = min(self.max_step_seconds, end - self._now)
            self._integrate(step)
            self._now = min(end, self._now + step)

    def _integrate(self, seconds: float) -> None:
        amps = self.battery_amps
        pack = self.battery
        drawn = amps * seconds / 3600 / pack.capacity_ah
        pack.state_of_charge = min(1.0, max(0.0, pack.state_of_charge - drawn))
        if self.on_mains:
            self.battery_cut_off = False
        elif not self.battery_cut_off:
            cell_volts = pack.terminal_volts(self.battery_amps) / pack.cells_in_series
            self.battery_cut_off = (pack.state_of_charge <= 0.0
                                    or cell_volts < self.cutoff_cell_volts)


def build_sim_bus(rig: PowerRig, *, seed: int = 0,
                  mains_shunt_ohms: float = MAINS_SHUNT_OHMS,
                  battery_shunt_ohms: float = BATTERY_SHUNT_OHMS) -> FakeSMBus:
    """An open FakeSMBus with the rig's three power chips at 0x40, 0x41 and 0x36."""
    bus = FakeSMBus(1, seed=seed)
    bus.attach(MAINS_MONITOR_ADDRESS, INA219Model(
        rig.mains_input, shunt_ohms=mains_shunt_ohms, clock=lambda: rig.now))
    bus.attach(BATTERY_MONITOR_ADDRESS, INA226Model(
        rig.battery_input, shunt_ohms=battery_shunt_ohms, clock=lambda: rig.now))
    bus.attach(FUEL_GAUGE_ADDRESS, MAX17048Model(rig.cell_input))
    return bus


_VALUE_NEEDED = {"mains_volts": "volts", "load_amps": "amps", "brown_out": "address",
                 "unplug": "address", "plug": "address"}
ACTIONS = frozenset({"mains_off", "mains_on", *_VALUE_NEEDED})
"""What a scenario step can do; the value is volts, amps or a bus address as named."""


@dataclass(frozen=True)
class Step:
    """At ``at_seconds``, do ``action`` (one of :data:`ACTIONS`) with ``value``."""

    at_seconds: float
    action: str
    value: float | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown scenario action {self.action!r}; "
                             f"expected one of {sorted(ACTIONS)}")
        if self.at_seconds < 0:
            raise ValueError("a step cannot happen before the start")
        needed = _VALUE_NEEDED.get(self.action)
        if (needed is None) != (self.value is None):
            wanted = f"a value ({needed})" if needed else "no value"
            raise ValueError(f"{self.action} takes {wanted}")


@dataclass(frozen=True)
class Scenario:
    """A scripted drill: the rig's starting state and timed steps."""

    name: str
    description: str
    steps: tuple[Step, ...]
    duration_seconds: float
    battery_percent: float = 100.0
    battery_health: float = 1.0
    capacity_mah: float = 3000.0
    load_amps: float = 0.8

    def build_rig(self) -> PowerRig:
        battery = BatteryPack(rated_capacity_mah=self.capacity_mah, health=self.battery_health,
                              state_of_charge=self.battery_percent / 100)
        return PowerRig(battery, load_amps=self.load_amps)


class ScenarioRunner:
    """Runs a scenario on a fresh rig and simulated bus, applying each step at its time.

    >>> runner = ScenarioRunner(SCENARIOS["mains_lost"])
    >>> runner.rig.on_mains
    True
    >>> [step.action for step in runner.advance(10)]
    ['mains_off']
    >>> runner.now, runner.rig.on_mains
    (10.0, False)
    """

    def __init__(self, scenario: Scenario, *, seed: int = 0) -> None:
        self.scenario = scenario
        self.rig = scenario.build_rig()
        self.bus = build_sim_bus(self.rig, seed=seed)
        self.applied: list[tuple[float, Step]] = []
        """Steps done so far, with the rig time they were done at."""
        self._pending = deque(sorted(scenario.steps, key=lambda step: step.at_seconds))
        self._unplugged: dict[int, I2CDevice] = {}
        self.advance(0.0)

    @property
    def now(self) -> float:
        return self.rig.now

    @property
    def finished(self) -> bool:
        return self.rig.now >= self.scenario.duration_seconds

    def advance(self, seconds: float) -> list[Step]:
        """Move the rig on, doing each step due on the way at its own time; returns them."""
        end = self.rig.now + seconds
        done: list[Step] = []
        while self._pending and self._pending[0].at_seconds <= end:
            step = self._pending.popleft()
            self.rig.advance(max(0.0, step.at_seconds - self.rig.now))
            self._apply(step)
            self.applied.append((self.rig.now, step))
            done.append(step)
        self.rig.advance(max(0.0, end - self.rig.now))
        return done

    def run(self, step_seconds: float = 1.0) -> Iterator[float]:
        """Advance to the scenario's end in steps, yielding the rig time after each."""
        while not self.finished:
            self.advance(min(step_seconds, self.scenario.duration_seconds - self.rig.now))
            yield self.rig.now

    def _apply(self, step: Step) -> None:
        if step.action in ("mains_off", "mains_on"):
            self.rig.mains_present = step.action == "mains_on"
            return
        assert step.value is not None  # Step.__post_init__ checked it
        if step.action == "mains_volts":
            self.rig.mains_volts = step.value
        elif step.action == "load_amps":
            self.rig.load_amps = step.value
        elif step.action == "brown_out":
            self._chip(self.bus.device_at(int(step.value))).brown_out()
        elif step.action == "unplug":
            self._unplugged[int(step.value)] = self.bus.detach(int(step.value))
        elif step.action == "plug":
            device = self._unplugged.pop(int(step.value))
            self._chip(device).brown_out()  # powering up again is a power-on reset
            self.bus.attach(int(step.value), device)

    @staticmethod
    def _chip(device: I2CDevice | None) -> PowerChipModel:
        if not isinstance(device, PowerChipModel):
            raise ValueError(f"{device!r} is not a power chip model")
        return device


SCENARIOS: dict[str, Scenario] = {scenario.name: scenario for scenario in (
    Scenario(
        "mains_lost", "Mains is lost at t=5 s; a full battery carries the kit.",
        (Step(5, "mains_off"),), duration_seconds=60),
    Scenario(
        "brown_out", "Mains sags to 4.2 V at t=5 s, so the UPS switches to battery, and the "
        "dip browns out the mains INA219, which loses its calibration; mains is back at t=8 s.",
        (Step(5, "mains_volts", 4.2), Step(5, "brown_out", MAINS_MONITOR_ADDRESS),
         Step(8, "mains_volts", 5.1)), duration_seconds=20),
    Scenario(
        "aged_battery", "A pack at 60 % health (less capacity, more resistance) loses mains at "
        "t=5 s under a 1.5 A load.",
        (Step(5, "mains_off"),), duration_seconds=600, battery_health=0.6, load_amps=1.5),
    Scenario(
        "sensor_unplugged", "The battery INA226 comes off the bus at t=10 s and is plugged "
        "back at t=20 s, powering up uncalibrated.",
        (Step(10, "unplug", BATTERY_MONITOR_ADDRESS), Step(20, "plug", BATTERY_MONITOR_ADDRESS)),
        duration_seconds=30),
    Scenario(
        "drain_to_critical", "A quarter-full 1000 mAh pack loses mains at t=5 s under a 2 A "
        "load and drains until its protection cuts off.",
        (Step(5, "mains_off"),), duration_seconds=300, battery_percent=25, capacity_mah=1000,
        load_amps=2.0),
)}
"""The named drills, by name."""
