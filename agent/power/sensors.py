"""The power drivers as the monitor uses them, building them from ``[power]``, reading them.

:func:`build_sensors` puts the drivers of :mod:`hw.power` that the config names on a bus:
a :class:`LazySMBus` on a Pi, the simulated rig's bus in ``dropkit sim``, each behind a
:class:`Checked` that asks the chip who it is before configuring it (a wrong chip is a
:class:`~hw.power.words.WrongChip` fault naming the address and what answered) and turns an
overflowed reading into a fault. The monitor keeps a :class:`TrackedSensor` per driver and
reads them with :func:`read_on_i2c_thread`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from hw.power.current import PowerReading
from hw.power.ina219 import INA219
from hw.power.ina226 import INA226
from hw.power.max17048 import MAX17048, GaugeReading
from hw.power.words import SensorError, WordRegisterChip

if TYPE_CHECKING:
    from gpiozero import DigitalInputDevice
    from gpiozero.pins import Factory

    from agent.config import PowerConfig
    from hw.power.words import SMBusLike

OVERFLOW_ERRNO = errno.ERANGE

SensorName = Literal["mains", "battery", "gauge"]

_CURRENT_MONITORS = {"ina219": INA219, "ina226": INA226}


class CurrentSensor(Protocol):
    """An INA219 or INA226 driver, as the monitor uses it."""

    def configure(self) -> None: ...

    def read(self) -> PowerReading: ...


class ChargeGauge(Protocol):
    """A MAX17048 driver, as the monitor uses it."""

    def configure(self) -> None: ...

    def read(self) -> GaugeReading: ...

    def clear_alerts(self) -> None: ...


class Checked:
    """A driver as the monitor uses it: :meth:`configure` first checks the chip's identity
    (``check_identity``, then the driver's own ``configure`` where it has one), and
    :meth:`read` refuses an overflowed current reading, so a saturated shunt's 3.1997 A or a
    wrong chip's 2.04 V never reaches the policy as a measurement."""

    def __init__(self, driver: WordRegisterChip) -> None:
        self.driver = driver

    def configure(self) -> None:
        self.driver.check_identity()
        configure = getattr(self.driver, "configure", None)
        if configure is not None:
            configure()

    def read(self) -> Any:
        reading = self.driver.read()  # type: ignore[attr-defined]
        if isinstance(reading, PowerReading) and reading.overflow:
            raise SensorError(
                OVERFLOW_ERRNO, f"{self.driver.CHIP} at 0x{self.driver.address:02x}: the "
                f"current is beyond what the shunt can measure ({reading.amps:.4f} A read, "
                f"overflow): reading not used", chip=self.driver.CHIP,
                address=self.driver.address, register=-1)
        return reading


class CheckedGauge(Checked):
    """The fuel gauge, :class:`Checked`, with the acknowledgement of its alert bits."""

    def clear_alerts(self) -> None:
        """Clear the gauge's alert bits (RI after a reset) once the monitor has confirmed its
        reading."""
        self.driver.clear_alerts()  # type: ignore[attr-defined]


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
        return Checked(_CURRENT_MONITORS[chip](
            bus, getattr(config, f"{name}_address"),
            shunt_ohms=getattr(config, f"{name}_shunt_ohms"),
            max_expected_amps=getattr(config, f"{name}_max_amps")))

    return PowerSensors(gauge=CheckedGauge(MAX17048(bus, config.gauge_address)),
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


Reading = PowerReading | GaugeReading


@dataclass
class TrackedSensor:
    """The monitor's bookkeeping for one driver."""

    name: SensorName
    read: Callable[[], Reading]
    configure: Callable[[], None] | None
    every_poll: bool
    """Read at every poll (the mains watch) or only at samples."""
    acknowledge: Callable[[], None] | None = None
    """Clears the chip's alert flags (the gauge's RI), when :attr:`acknowledging`."""
    acknowledging: bool = False
    configured: bool = False
    failures: int = 0
    faulted_since: float | None = None
    retry_at: float = 0.0
    reading: Any = None
    """The last good reading; None while faulted."""

    def before_read(self) -> Callable[[], None] | None:
        """What to write before the next read: the configuration, or the acknowledgement."""
        if not self.configured:
            return self.configure
        return self.acknowledge if self.acknowledging else None


ReadJob = tuple[SensorName, Callable[[], Reading], Callable[[], None] | None]


def read_on_i2c_thread(jobs: list[ReadJob]) -> list[tuple[SensorName, Reading | OSError]]:
    """Read each sensor (configuring or acknowledging it first where asked); a bus error is a
    result too.

    The monitor runs this on its one I2C thread."""
    results: list[tuple[SensorName, Reading | OSError]] = []
    for name, read, configure in jobs:
        try:
            if configure is not None:
                configure()
            results.append((name, read()))
        except OSError as exc:  # hw.power.words.SensorError, or the bus itself could not open
            results.append((name, exc))
    return results


def open_fail_line(config: PowerConfig, pin_factory: Factory | None,
                   when_failed: Callable[[], object]) -> DigitalInputDevice:
    """The power-fail line (``fail_gpio``), calling ``when_failed`` (on gpiozero's thread)
    when it goes active. Pulled towards its inactive level, so an undriven line never reads
    as a failure."""
    import warnings

    from gpiozero import DigitalInputDevice
    from gpiozero.exc import PinFactoryFallback

    # gpiozero warns once per pin library it cannot load; the outcome is one line.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinFactoryFallback)
        device = DigitalInputDevice(config.fail_gpio, pull_up=not config.fail_gpio_active_high,
                                    pin_factory=pin_factory)
    device.when_activated = when_failed
    return device
