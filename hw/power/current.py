"""What the TI INA219 and INA226 current monitors share: the reading, the calibration, the
registers 00h-05h, and the coherent sample (:mod:`hw.power.ina219`, :mod:`hw.power.ina226`
are the chips)."""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from hw.power.words import SMBusLike, WordRegisterChip, signed16

SAMPLE_ATTEMPTS = 3
"""Reads of one sample at most: a conversion that lands mid-read costs one more, and the next
attempt starts right after it, a whole conversion period before the next landing."""

CONVERSION_TIME_MARGIN = 1.1
"""The datasheets' maximum conversion times over their typical ones (INA219 SBOS448G §7.5:
12-bit 532 µs typical, 586 µs maximum; INA226 SBOS547B §6.5: 1.1 ms typical, 1.21 ms
maximum), so a wait of the typical cycle times this outlasts the slowest chip's."""


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
    """One sample of a power input, as an INA219 or INA226 measured it: volts, amps and watts
    of one conversion."""

    volts: float
    """Bus voltage (the supply side of the load, to ground)."""
    amps: float
    """Current through the shunt; the sign follows how the shunt is wired."""
    watts: float
    """The chip's unsigned Power register: bus volts times the magnitude of the current."""
    shunt_volts: float
    overflow: bool
    """The chip's current or power arithmetic overflowed (OVF), or the shunt voltage sat at
    the ADC's full scale: amps and watts are not what flows."""
    recalibrated: bool
    """The calibration register read 0 (a brown-out or power-on reset) and was written again
    (then the driver waited for a conversion with it)."""


@dataclass(frozen=True)
class Counts:
    """The measurement registers of one sample, as read."""

    shunt: int
    bus: int
    current: int
    power: int
    overflow: bool
    """The chip's OVF flag."""
    landed: bool
    """A new conversion finished while the sample was read: the counts may mix two."""

    def values(self) -> tuple[int, int, int, int, bool]:
        """What was measured, without the conversion-ready flag."""
        return self.shunt, self.bus, self.current, self.power, self.overflow


class CurrentMonitor(WordRegisterChip, ABC):
    """What the INA219 and INA226 share: registers 00h-05h and the calibration scheme."""

    CONFIG = 0x00
    SHUNT_VOLTAGE = 0x01
    BUS_VOLTAGE = 0x02
    POWER = 0x03
    CURRENT = 0x04
    CALIBRATION = 0x05
    DEFAULT_ADDRESS = 0x40
    RESET = 0x8000
    POWER_ON_CONFIG: ClassVar[int]
    DEFAULT_CONFIG: ClassVar[int]
    SHUNT_VOLTS_PER_LSB: ClassVar[float]
    BUS_VOLTS_PER_LSB: ClassVar[float]
    _CALIBRATION_SCALE: ClassVar[float]
    _POWER_LSB_PER_CURRENT_LSB: ClassVar[int]
    _CALIBRATION_MASK: ClassVar[int]

    def __init__(self, bus: SMBusLike, address: int = DEFAULT_ADDRESS, *,
                 shunt_ohms: float = 0.1, max_expected_amps: float = 3.2,
                 config: int | None = None,
                 sleep: Callable[[float], object] = time.sleep) -> None:
        super().__init__(bus, address)
        self.calibration = self.calibration_for(shunt_ohms, max_expected_amps)
        self.config = self.DEFAULT_CONFIG if config is None else config
        self._sleep = sleep

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
        """Write the configuration and calibration registers, then wait for the first
        conversion with them (until then Current and Power hold what they held before, 0
        after a reset): see :meth:`first_conversion_seconds`."""
        self.write_register(self.CONFIG, self.config)
        self.write_register(self.CALIBRATION, self.calibration.register)
        self._await_first_conversion()

    def first_conversion_seconds(self) -> float:
        """How long :meth:`configure` waits after writing Config: one conversion cycle at the
        datasheet's maximum, ``conversion_seconds() * CONVERSION_TIME_MARGIN``, where a cycle
        is the bus plus the shunt conversion time, times the averaging (each chip's
        :meth:`conversion_seconds` gives its datasheet's formula)."""
        return self.conversion_seconds() * CONVERSION_TIME_MARGIN

    def read(self) -> PowerReading:
        """One sample of one conversion (volts, amps and watts); rewrites config and
        calibration first if the calibration reads 0.

        The conversion-ready flag says whether a conversion landed while the sample was read:
        then it is read again. A chip's flag is set once per conversion, so two landings in a
        row mean the flag does not move as a chip's does: a register image whose flags never
        change (Linux's i2c-stub), whose registers do not change either. Its sample is taken
        once two reads agree, or after :data:`SAMPLE_ATTEMPTS` reads."""
        recalibrated = self.read_register(self.CALIBRATION) == 0
        if recalibrated:
            self.configure()
        counts = self._sample()
        for _ in range(SAMPLE_ATTEMPTS - 1):
            if not counts.landed:
                break
            again = self._sample()
            if again.values() == counts.values():
                break
            counts = again
        shunt = signed16(counts.shunt)
        return PowerReading(
            volts=counts.bus * self.BUS_VOLTS_PER_LSB,
            amps=signed16(counts.current) * self.calibration.current_lsb,
            watts=counts.power * self.calibration.power_lsb,
            shunt_volts=shunt * self.SHUNT_VOLTS_PER_LSB,
            overflow=counts.overflow or abs(shunt) >= self.shunt_full_scale(),
            recalibrated=recalibrated,
        )

    def _await_first_conversion(self) -> None:
        """Wait by time, as Linux's ina2xx does after it (re)initialises the chip, rather than
        by the flag: :meth:`first_conversion_seconds`. Then, should the flag not say so yet (a
        chip slower than its datasheet, or a model whose time moves with its bus), poll it
        for at most one more such period; a flag that never sets (a register image that never
        converts) ends the wait there, and its registers are read as they are. Each poll is
        one bus transaction (about 0.5 ms at 100 kHz), which paces the loop."""
        period_s = self.first_conversion_seconds()
        self._sleep(period_s)
        deadline = time.monotonic() + period_s
        while not self._conversion_ready() and time.monotonic() < deadline:
            pass

    @abstractmethod
    def conversion_seconds(self) -> float:
        """One conversion cycle (shunt and bus, averaged) with ``self.config``."""

    @abstractmethod
    def shunt_full_scale(self) -> int:
        """The shunt count the ADC saturates at, with ``self.config``."""

    @abstractmethod
    def _conversion_ready(self) -> bool:
        """Read the conversion-ready flag (which may clear it)."""

    @abstractmethod
    def _sample(self) -> Counts:
        """Read the four measurement registers and whether a conversion landed meanwhile."""
