"""What the TI INA219 and INA226 current monitors share: the reading, the calibration, the
registers 00h-05h (:mod:`hw.power.ina219`, :mod:`hw.power.ina226` are the chips)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from hw.power.words import SMBusLike, WordRegisterChip, signed16


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


class CurrentMonitor(WordRegisterChip, ABC):
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
        shunt = signed16(self.read_register(self.SHUNT_VOLTAGE))
        current = signed16(self.read_register(self.CURRENT))
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

