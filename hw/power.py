"""Power sensing over smbus2: TI INA219 / INA226 current monitors and the MAX17048 fuel gauge.

Each driver turns one chip's registers into a frozen reading in SI units and decides nothing:
it does not retry, smooth or judge. A failed bus transaction raises :class:`SensorError`
(an ``OSError`` that keeps the bus's errno: 121, EREMOTEIO, when nothing acknowledged the
address). Which source feeds the kit, and what to do about a flaky sensor, is the agent's call.

- :class:`INA219` and :class:`INA226` give a :class:`PowerReading` per power input.
- :class:`MAX17048` gives a :class:`GaugeReading` (and :class:`GaugeSettings`) for the cell.

The drivers take any object with smbus2.SMBus's word calls (:class:`SMBusLike`):
``smbus2.SMBus(1)`` on a Pi, ``simulators.smbus.FakeSMBus`` in tests and ``dropkit sim``.

Datasheets cited: INA219 SBOS448G (Dec 2015), INA226 SBOS547B (Sep 2024), and the
MAX17048/MAX17049 data sheet, whose register sections are named rather than numbered.
"""

from __future__ import annotations

import errno as errno_codes
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Protocol

__all__ = [
    "INA219",
    "INA226",
    "MAX17048",
    "Calibration",
    "GaugeReading",
    "GaugeSettings",
    "PowerReading",
    "SMBusLike",
    "SensorError",
    "swap_word_bytes",
]


class SMBusLike(Protocol):
    """The part of ``smbus2.SMBus`` the drivers call."""

    def read_word_data(self, i2c_addr: int, register: int, force: bool | None = None) -> int: ...

    def write_word_data(self, i2c_addr: int, register: int, value: int,
                        force: bool | None = None) -> None: ...


class SensorError(OSError):
    """A bus transaction with a power chip failed.

    ``errno`` is the bus's own: 121 (EREMOTEIO) when the chip did not acknowledge (absent,
    unpowered, unplugged), others (EIO, ETIMEDOUT) for a disturbed bus.
    """

    def __init__(self, code: int, message: str, *, chip: str, address: int,
                 register: int) -> None:
        super().__init__(code, message)
        self.chip = chip
        self.address = address
        self.register = register


def swap_word_bytes(word: int) -> int:
    """Swap the two bytes of a 16-bit word; it is its own inverse.

    These chips put a register on the wire most significant byte first (INA219 §8.5.6,
    INA226 §6.5.5.3, MAX17048 "Write Data Protocol" and "Read Data Protocol"), while the
    SMBus word protocol behind smbus2's ``read_word_data``/``write_word_data`` carries the low
    byte first.
    """
    return ((word & 0x00FF) << 8) | ((word >> 8) & 0x00FF)


def _signed16(value: int) -> int:
    """A 16-bit register read as two's complement."""
    return value - 0x10000 if value & 0x8000 else value


class _WordRegisterChip:
    """A chip whose registers are 16-bit words behind an 8-bit register address."""

    CHIP: ClassVar[str]

    def __init__(self, bus: SMBusLike, address: int) -> None:
        self.bus = bus
        self.address = address

    def read_register(self, register: int) -> int:
        """The register's 16-bit value as the chip holds it (byte order already fixed)."""
        try:
            word = self.bus.read_word_data(self.address, register)
        except OSError as exc:
            raise self._bus_error(exc, "read", register) from exc
        return swap_word_bytes(word)

    def write_register(self, register: int, value: int) -> None:
        """Write a 16-bit value to a register, most significant byte first on the wire."""
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"{self.CHIP} register value 0x{value:X} does not fit 16 bits")
        try:
            self.bus.write_word_data(self.address, register, swap_word_bytes(value))
        except OSError as exc:
            raise self._bus_error(exc, "write", register) from exc

    def _bus_error(self, exc: OSError, verb: str, register: int) -> SensorError:
        code = exc.errno if exc.errno is not None else errno_codes.EIO
        reason = exc.strerror or str(exc)
        return SensorError(
            code, f"{self.CHIP} at 0x{self.address:02x}: {verb} of register 0x{register:02x} "
            f"failed: {reason}", chip=self.CHIP, address=self.address, register=register)


@dataclass(frozen=True)
class Calibration:
    """An INA's calibration for one shunt and expected maximum current."""

    shunt_ohms: float
    current_lsb: float
    """Amps per count of the Current register."""
    power_lsb: float
    """Watts per count of the Power register."""
    register: int
    """The value written to the Calibration register."""


@dataclass(frozen=True)
class PowerReading:
    """One sample of a power input, as an INA219 or INA226 measured it."""

    volts: float
    """Bus voltage (the supply side of the load, to ground)."""
    amps: float
    """Current through the shunt; the sign follows how the shunt is wired."""
    watts: float
    """The chip's unsigned Power register: bus volts times the magnitude of the current."""
    shunt_volts: float
    conversion_ready: bool
    """A conversion finished since the flag was last cleared (CNVR / CVRF)."""
    overflow: bool
    """The chip's current or power arithmetic overflowed (OVF): amps and watts may be wrong."""
    recalibrated: bool
    """The calibration register read 0 (a brown-out or power-on reset) and was written again;
    amps and watts of this sample may predate it."""


class _CurrentMonitor(_WordRegisterChip, ABC):
    """What the INA219 and INA226 share: registers 00h-05h and the calibration scheme."""

    CONFIG = 0x00
    SHUNT_VOLTAGE = 0x01
    BUS_VOLTAGE = 0x02
    POWER = 0x03
    CURRENT = 0x04
    CALIBRATION = 0x05
    DEFAULT_ADDRESS = 0x40
    DEFAULT_CONFIG: ClassVar[int]
    SHUNT_VOLTS_PER_LSB: ClassVar[float]
    _CALIBRATION_SCALE: ClassVar[float]
    _POWER_LSB_PER_CURRENT_LSB: ClassVar[int]
    _CALIBRATION_MASK: ClassVar[int]

    def __init__(self, bus: SMBusLike, address: int = DEFAULT_ADDRESS, *,
                 shunt_ohms: float = 0.1, max_expected_amps: float = 3.2,
                 config: int | None = None) -> None:
        super().__init__(bus, address)
        self.calibration = self.calibration_for(shunt_ohms, max_expected_amps)
        self.config = self.DEFAULT_CONFIG if config is None else config

    @classmethod
    def calibration_for(cls, shunt_ohms: float, max_expected_amps: float) -> Calibration:
        """The calibration for a shunt and the largest current it should measure.

        Current_LSB = max_expected_amps / 2**15; Cal = trunc(scale / (Current_LSB * R_shunt));
        Power_LSB = k * Current_LSB (INA219 §8.5.1: scale 0.04096, k 20; INA226 §6.5.1:
        scale 0.00512, k 25). ValueError if Cal does not fit the register.
        """
        if shunt_ohms <= 0 or max_expected_amps <= 0:
            raise ValueError("shunt_ohms and max_expected_amps must be positive")
        current_lsb = max_expected_amps / 32768
        exact = math.trunc(cls._CALIBRATION_SCALE / (current_lsb * shunt_ohms))
        register = exact & cls._CALIBRATION_MASK
        if exact > cls._CALIBRATION_MASK or register == 0:
            raise ValueError(
                f"{cls.CHIP}: {shunt_ohms} ohm and {max_expected_amps} A need calibration "
                f"{exact}, outside 1..{cls._CALIBRATION_MASK}")
        return Calibration(shunt_ohms, current_lsb,
                           cls._POWER_LSB_PER_CURRENT_LSB * current_lsb, register)

    def configure(self) -> None:
        """Write the configuration and calibration registers."""
        self.write_register(self.CONFIG, self.config)
        self.write_register(self.CALIBRATION, self.calibration.register)

    def read(self) -> PowerReading:
        """One sample; rewrites config and calibration first if the calibration reads 0."""
        recalibrated = self.read_register(self.CALIBRATION) == 0
        if recalibrated:
            self.configure()
        volts, conversion_ready, overflow = self._bus_volts_and_flags()
        shunt = _signed16(self.read_register(self.SHUNT_VOLTAGE))
        current = _signed16(self.read_register(self.CURRENT))
        power = self.read_register(self.POWER)
        return PowerReading(
            volts=volts,
            amps=current * self.calibration.current_lsb,
            watts=power * self.calibration.power_lsb,
            shunt_volts=shunt * self.SHUNT_VOLTS_PER_LSB,
            conversion_ready=conversion_ready,
            overflow=overflow,
            recalibrated=recalibrated,
        )

    @abstractmethod
    def _bus_volts_and_flags(self) -> tuple[float, bool, bool]:
        """Bus volts, conversion ready, math overflow; read before the Power register."""


class INA219(_CurrentMonitor):
    """TI INA219 current/power monitor (SBOS448G), default address 0x40.

    Registers: Configuration 00h (§8.6.2.1, power-on 0x399F: 32 V bus range, PGA /8 so
    ±320 mV shunt range, 12-bit ADCs, shunt and bus continuous), Shunt Voltage 01h (§8.6.3.1,
    signed, LSB 10 µV), Bus Voltage 02h (§8.6.3.2, bits 15..3 with LSB 4 mV, CNVR bit 1, OVF
    bit 0), Power 03h (§8.6.3.3, Power_LSB), Current 04h (§8.6.3.4, signed, Current_LSB),
    Calibration 05h (§8.6.4.1, bit 0 is void and always reads 0, so Cal is kept even).

    Reading the Power register clears CNVR (§8.6.3.2), so :meth:`read` reads the bus register
    first. The calibration register returns to 0 on a brown-out; :meth:`read` then writes the
    configuration and calibration again and says so in ``recalibrated``.

    >>> from simulators.power_chips import INA219Model, ShuntInput
    >>> from simulators.smbus import FakeSMBus
    >>> bus = FakeSMBus(1)
    >>> chip = INA219Model(lambda: ShuntInput(amps=1.0, bus_volts=5.1), shunt_ohms=0.1)
    >>> bus.attach(0x40, chip)
    >>> ina = INA219(bus, shunt_ohms=0.1, max_expected_amps=3.2)
    >>> ina.configure()
    >>> reading = ina.read()
    >>> round(reading.volts, 3), round(reading.amps, 3), reading.recalibrated
    (5.1, 1.0, False)
    >>> chip.brown_out()
    >>> ina.read().recalibrated
    True
    """

    CHIP = "INA219"
    DEFAULT_CONFIG = 0x399F
    SHUNT_VOLTS_PER_LSB = 10e-6
    BUS_VOLTS_PER_LSB = 4e-3
    _CALIBRATION_SCALE = 0.04096
    _POWER_LSB_PER_CURRENT_LSB = 20
    _CALIBRATION_MASK = 0xFFFE
    _CONVERSION_READY = 0x0002
    _MATH_OVERFLOW = 0x0001

    def _bus_volts_and_flags(self) -> tuple[float, bool, bool]:
        bus = self.read_register(self.BUS_VOLTAGE)
        return ((bus >> 3) * self.BUS_VOLTS_PER_LSB, bool(bus & self._CONVERSION_READY),
                bool(bus & self._MATH_OVERFLOW))


class INA226(_CurrentMonitor):
    """TI INA226 current/power monitor (SBOS547B), default address 0x40.

    Registers: Configuration 00h (§7.1.1, power-on 0x4127: no averaging, 1.1 ms conversions,
    shunt and bus continuous), Shunt Voltage 01h (§7.1.2, signed, LSB 2.5 µV), Bus Voltage
    02h (§7.1.3, LSB 1.25 mV), Power 03h (§7.1.4, Power_LSB = 25 × Current_LSB), Current 04h
    (§7.1.5, signed), Calibration 05h (§7.1.6, 15 bits), Mask/Enable 06h (§7.1.7: CVRF
    conversion ready bit 3, cleared by reading this register; OVF bit 2), Manufacturer ID FEh
    (§7.1.9, 0x5449 "TI"), Die ID FFh (§7.1.10, 0x2260: device 0x226, revision 0).

    >>> from simulators.power_chips import INA226Model, ShuntInput
    >>> from simulators.smbus import FakeSMBus
    >>> bus = FakeSMBus(1)
    >>> bus.attach(0x41, INA226Model(lambda: ShuntInput(amps=1.5, bus_volts=3.7),
    ...                              shunt_ohms=0.01))
    >>> ina = INA226(bus, 0x41, shunt_ohms=0.01, max_expected_amps=4.096)
    >>> ina.identify()
    True
    >>> ina.configure()
    >>> reading = ina.read()
    >>> round(reading.volts, 4), round(reading.amps, 4), round(reading.watts, 4)
    (3.7, 1.5, 5.55)
    """

    CHIP = "INA226"
    DEFAULT_CONFIG = 0x4127
    MASK_ENABLE = 0x06
    MANUFACTURER_ID = 0xFE
    DIE_ID = 0xFF
    TI_MANUFACTURER_ID = 0x5449
    INA226_DEVICE_ID = 0x226
    SHUNT_VOLTS_PER_LSB = 2.5e-6
    BUS_VOLTS_PER_LSB = 1.25e-3
    _CALIBRATION_SCALE = 0.00512
    _POWER_LSB_PER_CURRENT_LSB = 25
    _CALIBRATION_MASK = 0x7FFF
    _CONVERSION_READY = 0x0008
    _MATH_OVERFLOW = 0x0004

    def identify(self) -> bool:
        """Whether the chip says it is an INA226: TI's id and device id 0x226, any revision."""
        return (self.read_register(self.MANUFACTURER_ID) == self.TI_MANUFACTURER_ID
                and self.read_register(self.DIE_ID) >> 4 == self.INA226_DEVICE_ID)

    def _bus_volts_and_flags(self) -> tuple[float, bool, bool]:
        flags = self.read_register(self.MASK_ENABLE)
        volts = self.read_register(self.BUS_VOLTAGE) * self.BUS_VOLTS_PER_LSB
        return (volts, bool(flags & self._CONVERSION_READY), bool(flags & self._MATH_OVERFLOW))


@dataclass(frozen=True)
class GaugeReading:
    """One sample of the MAX17048 fuel gauge: the cell and the STATUS alert flags."""

    percent: float
    """Relative state of charge from the ModelGauge algorithm (may read a little over 100)."""
    cell_volts: float
    """Cell voltage (per cell on the two-cell MAX17049)."""
    rate_percent_per_hour: float
    """Charge (positive) or discharge (negative) rate."""
    reset_indicator: bool
    """RI: the gauge was reset (power-up, brown-out) and has not been acknowledged since."""
    voltage_high: bool
    voltage_low: bool
    voltage_reset: bool
    soc_low: bool
    """HD: the state of charge crossed the empty alert threshold."""
    soc_changed: bool


@dataclass(frozen=True)
class GaugeSettings:
    """The MAX17048's configuration registers, decoded."""

    rcomp: int
    sleep_enabled: bool
    hibernating: bool
    empty_alert_percent: int
    alert: bool
    """CONFIG.ALRT: an alert is asserted on the ALRT pin."""
    hibernate_threshold_percent_per_hour: float
    active_threshold_volts: float
    alert_min_volts: float
    alert_max_volts: float
    reset_volts: float
    chip_id: int


class MAX17048(_WordRegisterChip):
    """Maxim (Analog Devices) MAX17048/MAX17049 ModelGauge fuel gauge, address 0x36.

    Registers (data sheet "Register Summary" and the section named after each register):
    VCELL 02h (78.125 µV per cell per LSB), SOC 04h (high byte percent, low byte 1/256 %),
    MODE 06h (bit 13 EnSleep, bit 12 HibStat), VERSION 08h (0x001X), HIBRT 0Ah (high byte
    HibThr 0.208 %/hr, low byte ActThr 1.25 mV), CONFIG 0Ch (RCOMP high byte, ALRT bit 5,
    ATHD bits 4..0: empty alert at 32 − ATHD %), VALRT 14h (MIN high byte, MAX low byte,
    20 mV each), CRATE 16h (signed, 0.208 %/hr), VRESET/ID 18h (VRESET bits 15..9 at 40 mV,
    ID low byte), STATUS 1Ah (RI, VH, VL, VR, HD, SC in bits 8..13, EnVr bit 14).

    >>> from simulators.power_chips import CellInput, MAX17048Model
    >>> from simulators.smbus import FakeSMBus
    >>> bus = FakeSMBus(1)
    >>> cell = CellInput(cell_volts=3.7, percent=87.5, rate_percent_per_hour=-10.4)
    >>> bus.attach(0x36, MAX17048Model(lambda: cell))
    >>> gauge = MAX17048(bus)
    >>> gauge.identify()
    True
    >>> reading = gauge.read()
    >>> reading.percent, round(reading.cell_volts, 4), round(reading.rate_percent_per_hour, 3)
    (87.5, 3.7, -10.4)
    """

    CHIP = "MAX17048"
    DEFAULT_ADDRESS = 0x36
    VCELL = 0x02
    SOC = 0x04
    MODE = 0x06
    VERSION = 0x08
    HIBRT = 0x0A
    CONFIG = 0x0C
    VALRT = 0x14
    CRATE = 0x16
    VRESET_ID = 0x18
    STATUS = 0x1A
    CELL_VOLTS_PER_LSB = 78.125e-6
    PERCENT_PER_LSB = 1 / 256
    RATE_PERCENT_PER_HOUR_PER_LSB = 0.208
    _MODE_SLEEP_ENABLED = 0x2000
    _MODE_HIBERNATING = 0x1000
    _CONFIG_ALERT = 0x0020
    _CONFIG_EMPTY_THRESHOLD = 0x001F
    _STATUS_RI = 0x0100
    _STATUS_VH = 0x0200
    _STATUS_VL = 0x0400
    _STATUS_VR = 0x0800
    _STATUS_HD = 0x1000
    _STATUS_SC = 0x2000
    _STATUS_ENABLE_VOLTAGE_RESET_ALERT = 0x4000

    def __init__(self, bus: SMBusLike, address: int = DEFAULT_ADDRESS) -> None:
        super().__init__(bus, address)

    def identify(self) -> bool:
        """Whether VERSION reads 0x001X, as MAX17048/MAX17049 parts do."""
        return self.version() & 0xFFF0 == 0x0010

    def version(self) -> int:
        """The VERSION register: the IC's production version."""
        return self.read_register(self.VERSION)

    def read(self) -> GaugeReading:
        """One sample: VCELL, SOC, CRATE and the STATUS flags."""
        status = self.read_register(self.STATUS)
        return GaugeReading(
            percent=self.read_register(self.SOC) * self.PERCENT_PER_LSB,
            cell_volts=self.read_register(self.VCELL) * self.CELL_VOLTS_PER_LSB,
            rate_percent_per_hour=(_signed16(self.read_register(self.CRATE))
                                   * self.RATE_PERCENT_PER_HOUR_PER_LSB),
            reset_indicator=bool(status & self._STATUS_RI),
            voltage_high=bool(status & self._STATUS_VH),
            voltage_low=bool(status & self._STATUS_VL),
            voltage_reset=bool(status & self._STATUS_VR),
            soc_low=bool(status & self._STATUS_HD),
            soc_changed=bool(status & self._STATUS_SC),
        )

    def read_settings(self) -> GaugeSettings:
        """MODE, HIBRT, CONFIG, VALRT and VRESET/ID, decoded."""
        mode = self.read_register(self.MODE)
        hibernate = self.read_register(self.HIBRT)
        config = self.read_register(self.CONFIG)
        voltage_alert = self.read_register(self.VALRT)
        reset_id = self.read_register(self.VRESET_ID)
        return GaugeSettings(
            rcomp=config >> 8,
            sleep_enabled=bool(mode & self._MODE_SLEEP_ENABLED),
            hibernating=bool(mode & self._MODE_HIBERNATING),
            empty_alert_percent=32 - (config & self._CONFIG_EMPTY_THRESHOLD),
            alert=bool(config & self._CONFIG_ALERT),
            hibernate_threshold_percent_per_hour=(
                (hibernate >> 8) * self.RATE_PERCENT_PER_HOUR_PER_LSB),
            active_threshold_volts=(hibernate & 0xFF) * 1.25e-3,
            alert_min_volts=(voltage_alert >> 8) * 0.02,
            alert_max_volts=(voltage_alert & 0xFF) * 0.02,
            reset_volts=(reset_id >> 9) * 0.04,
            chip_id=reset_id & 0xFF,
        )

    def clear_alerts(self) -> None:
        """Acknowledge the STATUS flags (RI included) and CONFIG.ALRT, keeping EnVr."""
        status = self.read_register(self.STATUS)
        self.write_register(self.STATUS, status & self._STATUS_ENABLE_VOLTAGE_RESET_ALERT)
        config = self.read_register(self.CONFIG)
        self.write_register(self.CONFIG, config & ~self._CONFIG_ALERT & 0xFFFF)
