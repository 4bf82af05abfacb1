"""Register-level models of the power chips: TI INA219 and INA226, Maxim MAX17048.

Each model holds its registers as the datasheet describes them and computes the measurement
registers from live inputs (a callable the power rig supplies), so a driver talks to it over
:class:`simulators.smbus.FakeSMBus` exactly as it would to the chip. The register maps are
written out here again from the datasheets rather than imported from ``hw.power``, so a wrong
address or scale in the driver fails the tests instead of being shared by both sides.

Simplifications, on purpose:

- Conversions take the time the configuration sets (ADC times and averaging from the
  datasheets' tables) and land every period from the last Config write or reset; the
  measurement registers hold the last conversion's results (0 after a reset), computed with
  the calibration of that moment. The model's time is the rig's clock plus the bus's own:
  each register transfer takes :data:`WORD_TRANSFER_S`, so polling a flag with the rig's
  clock stopped still sees a conversion finish, and one can land in the middle of a read.
- Only the continuous shunt-and-bus mode is modelled; the INA226 alert function (AFF,
  ALERT pin, Alert Limit comparisons) is not, though its registers keep what is written.
- The MAX17048 reports the rig's true state of charge (a perfect ModelGauge); the SOC-change
  alert (SC), voltage-reset detection (VR), hibernation and the model TABLE are not modelled.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from simulators.smbus import WordRegisterDevice

__all__ = [
    "WORD_TRANSFER_S",
    "CellInput",
    "INA219Model",
    "INA226Model",
    "MAX17048Model",
    "PowerChipModel",
    "ShuntInput",
]

Clock = Callable[[], float]
"""Seconds on the rig's clock; only its advance matters."""

WORD_TRANSFER_S = 0.0005
"""One register read or write at 100 kHz (the Pi's default): about 45 bit times with the
address, pointer, repeated start and acknowledges."""

# INA219 SBOS448G §8.6.2.1 BADC/SADC: seconds of one ADC result.
_INA219_ADC_S = {0b0000: 84e-6, 0b0001: 148e-6, 0b0010: 276e-6, 0b0011: 532e-6,
                 0b1000: 532e-6, 0b1001: 1.06e-3, 0b1010: 2.13e-3, 0b1011: 4.26e-3,
                 0b1100: 8.51e-3, 0b1101: 17.02e-3, 0b1110: 34.05e-3, 0b1111: 68.10e-3}
# INA226 SBOS547B §7.1.1: AVG (count) and VBUSCT/VSHCT (seconds).
_INA226_AVG = (1, 4, 16, 64, 128, 256, 512, 1024)
_INA226_CT_S = (140e-6, 204e-6, 332e-6, 588e-6, 1.1e-3, 2.116e-3, 4.156e-3, 8.244e-3)


def _stopped_clock() -> float:
    return 0.0


@dataclass(frozen=True)
class ShuntInput:
    """What an INA's pins see."""

    amps: float
    """Current through the shunt, from IN+ to IN-."""
    bus_volts: float
    """Voltage from the bus pin to ground."""


@dataclass(frozen=True)
class CellInput:
    """What the fuel gauge's ModelGauge algorithm would conclude about the cell."""

    cell_volts: float
    """Voltage of one cell (the MAX17049 reports the per-cell voltage of two in series)."""
    percent: float
    rate_percent_per_hour: float
    """Positive while charging."""


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _word(value: int) -> int:
    """A signed count as the 16-bit two's complement pattern a register holds."""
    return value & 0xFFFF


class PowerChipModel(WordRegisterDevice, ABC):
    """A power chip model: a register file that can lose its power."""

    @abstractmethod
    def brown_out(self) -> None:
        """The supply dipped below the power-on-reset threshold (or the chip was re-plugged):
        every register returns to its power-on value."""


@dataclass(frozen=True)
class _Conversion:
    """One INA conversion as register counts."""

    shunt: int
    bus: int
    current: int
    power: int
    overflow: bool


class _INAModel(PowerChipModel):
    """The INA219 and INA226 share registers 00h-05h and the current and power arithmetic."""

    CONFIG, SHUNT, BUS, POWER, CURRENT, CALIBRATION = range(6)
    POWER_ON_CONFIG: ClassVar[int]
    SHUNT_VOLTS_PER_LSB: ClassVar[float]
    BUS_VOLTS_PER_LSB: ClassVar[float]
    CURRENT_DIVISOR: ClassVar[int]
    """Current = Shunt × Calibration / CURRENT_DIVISOR."""
    POWER_DIVISOR: ClassVar[int]
    """Power = |Current| × Bus / POWER_DIVISOR."""
    CALIBRATION_MASK: ClassVar[int]

    def __init__(self, sense: Callable[[], ShuntInput], *, shunt_ohms: float = 0.1,
                 clock: Clock = _stopped_clock) -> None:
        """``sense`` gives the pins' present inputs; ``clock`` is the rig's (the default never
        advances, so only the bus's own transfers move the model's time)."""
        super().__init__()
        self.sense = sense
        self.shunt_ohms = shunt_ohms
        self.clock = clock
        self.bus_seconds = 0.0
        """Time the bus spent on this chip's transfers."""
        self.conversions = 0
        """Conversions finished since the last Config write or reset."""
        self.brown_out()

    def brown_out(self) -> None:
        self.pointer = 0
        self.config = self.POWER_ON_CONFIG
        self.calibration = 0
        self.latched = _Conversion(0, 0, 0, 0, False)
        """The measurement registers: the last conversion's results."""
        self._restart()

    def now(self) -> float:
        """The model's time: the rig's clock plus the bus's transfers."""
        return self.clock() + self.bus_seconds

    def _restart(self) -> None:
        """A Config write or reset: the conversion in progress is abandoned, CNVR cleared."""
        self._started_at = self.now()
        self.conversions = 0
        self.conversion_ready = False

    @abstractmethod
    def conversion_seconds(self) -> float:
        """One conversion cycle (shunt and bus, with averaging) at the present Config."""

    def _catch_up(self) -> None:
        """Latch the newest conversion if one finished since the last look."""
        done = math.floor((self.now() - self._started_at) / self.conversion_seconds())
        if done > self.conversions:
            self.conversions = done
            self.latched = self.convert()
            self.conversion_ready = True

    def _transfer(self) -> None:
        self.bus_seconds += WORD_TRANSFER_S
        self._catch_up()

    def _shunt_range(self) -> int:
        """Largest shunt count, either sign, the ADC reports (clamped beyond)."""
        return 0x7FFF

    def _bus_range(self) -> int:
        """Largest bus count the ADC reports."""
        return 0x7FFF

    def convert(self) -> _Conversion:
        """The measurement registers for the present inputs and calibration."""
        inputs = self.sense()
        shunt_limit = self._shunt_range()
        shunt = _clamp(round(inputs.amps * self.shunt_ohms / self.SHUNT_VOLTS_PER_LSB),
                       -shunt_limit, shunt_limit)
        bus = _clamp(round(inputs.bus_volts / self.BUS_VOLTS_PER_LSB), 0, self._bus_range())
        current = int(shunt * self.calibration / self.CURRENT_DIVISOR)
        power = int(abs(current) * bus / self.POWER_DIVISOR)
        overflow = not -0x8000 <= current <= 0x7FFF or power > 0xFFFF
        return _Conversion(shunt, bus, _clamp(current, -0x8000, 0x7FFF),
                           min(power, 0xFFFF), overflow)

    def read_register(self, register: int) -> int:
        self._transfer()
        if register == self.CONFIG:
            return self.config
        if register == self.CALIBRATION:
            return self.calibration
        if register == self.SHUNT:
            return _word(self.latched.shunt)
        if register == self.CURRENT:
            return _word(self.latched.current)
        if register == self.POWER:
            return self.latched.power
        if register == self.BUS:
            return self._bus_register(self.latched)
        return super().read_register(register)

    def _bus_register(self, conversion: _Conversion) -> int:
        return conversion.bus

    def write_register(self, register: int, value: int) -> None:
        self._transfer()
        if register == self.CONFIG:
            if value & 0x8000:
                self.brown_out()
            else:
                self.config = self._writable_config(value)
                self._restart()
        elif register == self.CALIBRATION:
            self.calibration = value & self.CALIBRATION_MASK
        # The measurement registers are read-only: writes to them are ignored.

    @abstractmethod
    def _writable_config(self, value: int) -> int:
        """What the Config register keeps of a written value (reset bit excluded)."""


class INA219Model(_INAModel):
    """TI INA219 (SBOS448G): power-on config 0x399F, calibration 0 (so current and power 0).

    Shunt LSB 10 µV clamped to the PGA range (config bits 12..11: ±40/80/160/320 mV), bus LSB
    4 mV in bits 15..3 with CNVR (bit 1) and OVF (bit 0), clamped to the BRNG range (16 or
    32 V). Current = Shunt × Cal / 4096, Power = Current × Bus / 5000 (§8.5.1). Calibration
    bit 0 is void (§8.6.4.1). Reading Power or writing Config clears CNVR (§8.6.3.2).
    """

    POWER_ON_CONFIG = 0x399F
    SHUNT_VOLTS_PER_LSB = 10e-6
    BUS_VOLTS_PER_LSB = 4e-3
    CURRENT_DIVISOR = 4096
    POWER_DIVISOR = 5000
    CALIBRATION_MASK = 0xFFFE

    def conversion_seconds(self) -> float:
        def adc(field: int) -> float:
            return _INA219_ADC_S[field if field & 0b1000 else field & 0b0011]

        return adc((self.config >> 7) & 0xF) + adc((self.config >> 3) & 0xF)

    def _shunt_range(self) -> int:
        return 4000 << ((self.config >> 11) & 0b11)

    def _bus_range(self) -> int:
        return 8000 if self.config & 0x2000 else 4000

    def _bus_register(self, conversion: _Conversion) -> int:
        return ((conversion.bus << 3) | (0x0002 if self.conversion_ready else 0)
                | (0x0001 if conversion.overflow else 0))

    def read_register(self, register: int) -> int:
        value = super().read_register(register)
        if register == self.POWER:
            self.conversion_ready = False
        return value

    def _writable_config(self, value: int) -> int:
        return value & 0x3FFF


class INA226Model(_INAModel):
    """TI INA226 (SBOS547B): power-on config 0x4127 (bits 14..12 always read 100b).

    Shunt LSB 2.5 µV, bus LSB 1.25 mV (15 bits). Current = Shunt × Cal / 2048, Power =
    Current × Bus / 20000 (§6.5.1). Calibration is 15 bits (§7.1.6). Mask/Enable 06h holds
    the alert configuration (bits 15..10, 1, 0) and reports CVRF (bit 3, cleared by reading
    Mask/Enable or writing Config) and OVF (bit 2). Manufacturer ID FEh 0x5449, Die ID FFh
    0x2260.
    """

    POWER_ON_CONFIG = 0x4127
    SHUNT_VOLTS_PER_LSB = 2.5e-6
    BUS_VOLTS_PER_LSB = 1.25e-3
    CURRENT_DIVISOR = 2048
    POWER_DIVISOR = 20000
    CALIBRATION_MASK = 0x7FFF
    MASK_ENABLE, ALERT_LIMIT = 0x06, 0x07
    MANUFACTURER_ID, DIE_ID = 0xFE, 0xFF
    _MASK_ENABLE_WRITABLE = 0xFC03

    def brown_out(self) -> None:
        super().brown_out()
        self.mask_enable = 0
        self.alert_limit = 0

    def read_register(self, register: int) -> int:
        if register == self.MASK_ENABLE:
            self._transfer()
            flags = ((0x0008 if self.conversion_ready else 0)
                     | (0x0004 if self.latched.overflow else 0))
            self.conversion_ready = False
            return self.mask_enable | flags
        if register in (self.ALERT_LIMIT, self.MANUFACTURER_ID, self.DIE_ID):
            self._transfer()
            return {self.ALERT_LIMIT: self.alert_limit, self.MANUFACTURER_ID: 0x5449,
                    self.DIE_ID: 0x2260}[register]
        return super().read_register(register)

    def write_register(self, register: int, value: int) -> None:
        if register == self.MASK_ENABLE:
            self._transfer()
            self.mask_enable = value & self._MASK_ENABLE_WRITABLE
        elif register == self.ALERT_LIMIT:
            self._transfer()
            self.alert_limit = value
        else:
            super().write_register(register, value)

    def conversion_seconds(self) -> float:
        config = self.config
        return _INA226_AVG[(config >> 9) & 7] * (_INA226_CT_S[(config >> 6) & 7]
                                                 + _INA226_CT_S[(config >> 3) & 7])

    def _writable_config(self, value: int) -> int:
        return (value & 0x0FFF) | 0x4000


class MAX17048Model(PowerChipModel):
    """Maxim MAX17048/MAX17049 fuel gauge: registers as in the data sheet's Register Summary.

    VCELL 02h (78.125 µV/cell), SOC 04h (1/256 %), CRATE 16h (signed, 0.208 %/hr) come from
    the rig's cell; VERSION 08h and the VRESET/ID low byte are read-only; MODE 06h (EnSleep
    writable, Quick-Start self-clearing), HIBRT 0Ah (0x8030), CONFIG 0Ch (0x971C), VALRT 14h
    (0x00FF), VRESET 18h high byte (0x96) and STATUS 1Ah (RI set at power-on; flags stay set
    until the host writes them clear) are read/write. Writing 0x5400 to CMD FEh resets the IC.
    When the cell crosses VALRT.MIN/MAX (VL/VH) or the CONFIG.ATHD empty threshold (HD), the
    IC sets that STATUS flag and CONFIG.ALRT.
    """

    VCELL, SOC, MODE, VERSION, HIBRT, CONFIG = 0x02, 0x04, 0x06, 0x08, 0x0A, 0x0C
    VALRT, CRATE, VRESET_ID, STATUS, CMD = 0x14, 0x16, 0x18, 0x1A, 0xFE
    register_step = 2
    """Registers span two byte addresses; a long read runs on into the next register."""
    _POR_COMMAND = 0x5400
    _RI, _VH, _VL, _HD = 0x0100, 0x0200, 0x0400, 0x1000
    _STATUS_WRITABLE = 0x7F00
    _ALRT = 0x0020

    def __init__(self, sense: Callable[[], CellInput], *, version: int = 0x0012,
                 chip_id: int = 0x01) -> None:
        super().__init__()
        self.sense = sense
        self.version = version
        self.chip_id = chip_id
        self.brown_out()

    def brown_out(self) -> None:
        self.pointer = 0
        self.mode = 0x0000
        self.hibrt = 0x8030
        self.config = 0x971C
        self.valrt = 0x00FF
        self.vreset = 0x96
        self.status = self._RI
        self._tripped = 0

    def _raise_alerts(self, cell: CellInput) -> None:
        """Set the STATUS flags of thresholds the cell has just crossed, and CONFIG.ALRT."""
        tripped = 0
        if cell.cell_volts < (self.valrt >> 8) * 0.02:
            tripped |= self._VL
        if cell.cell_volts > (self.valrt & 0xFF) * 0.02:
            tripped |= self._VH
        if cell.percent < 32 - (self.config & 0x1F):
            tripped |= self._HD
        crossed = tripped & ~self._tripped
        self._tripped = tripped
        if crossed:
            self.status |= crossed
            self.config |= self._ALRT

    def read_register(self, register: int) -> int:
        cell = self.sense()
        self._raise_alerts(cell)
        registers = {
            self.VCELL: _clamp(round(cell.cell_volts / 78.125e-6), 0, 0xFFFF),
            self.SOC: _clamp(round(cell.percent * 256), 0, 0xFFFF),
            self.MODE: self.mode,
            self.VERSION: self.version,
            self.HIBRT: self.hibrt,
            self.CONFIG: self.config,
            self.VALRT: self.valrt,
            self.CRATE: _word(_clamp(round(cell.rate_percent_per_hour / 0.208),
                                     -0x8000, 0x7FFF)),
            self.VRESET_ID: (self.vreset << 8) | self.chip_id,
            self.STATUS: self.status,
        }
        return registers.get(register, 0)

    def write_register(self, register: int, value: int) -> None:
        if register == self.MODE:
            self.mode = value & 0x2000
        elif register == self.HIBRT:
            self.hibrt = value
        elif register == self.CONFIG:
            self.config = value
        elif register == self.VALRT:
            self.valrt = value
        elif register == self.VRESET_ID:
            self.vreset = value >> 8
        elif register == self.STATUS:
            self.status = value & self._STATUS_WRITABLE
        elif register == self.CMD and value == self._POR_COMMAND:
            self.brown_out()
        # VCELL, SOC, VERSION and CRATE are read-only: writes to them are ignored.
