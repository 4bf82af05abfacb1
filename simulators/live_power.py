"""The power rig of ``dropkit sim`` in real time, with the controls a staff page or drill needs.

:class:`SimulatedPower` runs a :class:`simulators.power_rig.ScenarioRunner` on the event loop's
clock and exposes the simulated I2C bus (:attr:`SimulatedPower.bus`), which the real drivers of
:mod:`hw.power` read as they would a Pi's; building them is the agent's job.

    >>> from hw.power.max17048 import MAX17048
    >>> sim = SimulatedPower()
    >>> gauge = MAX17048(sim.bus, FUEL_GAUGE_ADDRESS)
    >>> sim.pull_mains(); sim.advance(60)
    >>> gauge.read().rate_percent_per_hour < 0
    True
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

from simulators.power_chips import PowerChipModel
from simulators.power_rig import (
    BATTERY_MONITOR_ADDRESS,
    FUEL_GAUGE_ADDRESS,
    MAINS_MONITOR_ADDRESS,
    SCENARIOS,
    Scenario,
    ScenarioRunner,
)
from simulators.smbus import I2CDevice

log = logging.getLogger(__name__)

ChipName = Literal["mains", "battery", "gauge"]
CHIP_ADDRESSES: Mapping[ChipName, int] = {"mains": MAINS_MONITOR_ADDRESS,
                                          "battery": BATTERY_MONITOR_ADDRESS,
                                          "gauge": FUEL_GAUGE_ADDRESS}
"""The rig's power chips by the name the agent gives each sensor, and their bus addresses."""


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

    The drivers that the agent builds on :attr:`bus` reach whichever scenario runs now.
    """

    def __init__(self, scenario: str = "live", *, speed: float = 1.0, tick_s: float = 0.1,
                 seed: int = 0) -> None:
        if speed <= 0 or tick_s <= 0:
            raise ValueError("speed and tick_s must be positive")
        self.speed, self.tick_s, self.seed = speed, tick_s, seed
        self.bus = _ForwardingBus(self)
        self.runner: ScenarioRunner
        self._unplugged: dict[ChipName, I2CDevice] = {}
        self.run_scenario(scenario)

    @staticmethod
    def scenarios() -> dict[str, Scenario]:
        """The scenarios by name: ``live`` and the drills."""
        live = Scenario("live", "Mains present, a full battery, the default load; nothing "
                        "scripted.", (), duration_seconds=math.inf)
        return {"live": live, **SCENARIOS}

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
        scenarios = self.scenarios()
        if name not in scenarios:
            raise ValueError(f"unknown power scenario {name!r}; expected one of "
                             f"{', '.join(scenarios)}")
        self.runner = ScenarioRunner(scenarios[name], seed=self.seed)
        self._unplugged.clear()
        log.info("sim power: scenario %s: %s", name, scenarios[name].description)
        return scenarios[name]

    def carry_on(self, saved: Mapping[str, Any]) -> None:
        """Go on from a :meth:`snapshot` taken before the kit stopped (a real pack keeps its
        charge over a restart): the ``live`` scenario with that charge, mains and load."""
        rig = self.runner.rig
        live = Scenario("live", "Carried on from before the restart.", (), math.inf,
                        battery_percent=min(100.0, max(0.0, float(saved["battery_percent"]))),
                        capacity_mah=float(saved.get("capacity_mah",
                                                     rig.battery.rated_capacity_mah)),
                        load_amps=float(saved["load_amps"]))
        self.runner = ScenarioRunner(live, seed=self.seed)
        self._unplugged.clear()
        self.runner.rig.mains_present = bool(saved["mains_present"])
        self.runner.rig.mains_volts = float(saved["mains_volts"])
        log.info("sim power: carried on at %.1f %%, mains %s", live.battery_percent,
                 "present" if self.runner.rig.mains_present else "absent")

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

    def unplug(self, sensor: ChipName) -> None:
        """Take a power chip off the bus, as a loose cable would."""
        address = self._address(sensor)
        if address not in self.runner.bus.addresses():
            raise ValueError(f"the {sensor} sensor is not on the bus")
        self._unplugged[sensor] = self.runner.bus.detach(address)

    def plug(self, sensor: ChipName) -> None:
        """Plug a chip taken off with :meth:`unplug` back in: it powers up with reset registers."""
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
                "capacity_mah": rig.battery.rated_capacity_mah,
                "unplugged": [name for name in CHIP_ADDRESSES
                              if self._address(name) not in self.runner.bus.addresses()]}

    @staticmethod
    def _address(sensor: ChipName) -> int:
        if sensor not in CHIP_ADDRESSES:
            raise ValueError(f"unknown sensor {sensor!r}; expected one of {tuple(CHIP_ADDRESSES)}")
        return CHIP_ADDRESSES[sensor]
