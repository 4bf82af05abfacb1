"""The Maxim (Analog Devices) MAX17048/MAX17049 ModelGauge fuel gauge."""

from __future__ import annotations

from dataclasses import dataclass

from hw.power.words import SMBusLike, WordRegisterChip, signed16


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

    @property
    def alerts(self) -> tuple[str, ...]:
        """The STATUS flags that are set, by their data sheet names (RI, VH, VL, VR, HD, SC)."""
        flags = (("RI", self.reset_indicator), ("VH", self.voltage_high),
                 ("VL", self.voltage_low), ("VR", self.voltage_reset), ("HD", self.soc_low),
                 ("SC", self.soc_changed))
        return tuple(name for name, set_ in flags if set_)


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


class MAX17048(WordRegisterChip):
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

    def identity(self) -> str:
        """VERSION reads 0x001X on MAX17048/MAX17049 parts; else what it read."""
        version = self.version()
        if version & 0xFFF0 == 0x0010:
            return ""
        return f"VERSION 0x{version:04X} (a MAX17048 reads 0x001X)"

    def version(self) -> int:
        """The VERSION register: the IC's production version."""
        return self.read_register(self.VERSION)

    def read(self) -> GaugeReading:
        """One sample: VCELL, SOC, CRATE and the STATUS flags."""
        status = self.read_register(self.STATUS)
        return GaugeReading(
            percent=self.read_register(self.SOC) * self.PERCENT_PER_LSB,
            cell_volts=self.read_register(self.VCELL) * self.CELL_VOLTS_PER_LSB,
            rate_percent_per_hour=(signed16(self.read_register(self.CRATE))
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
