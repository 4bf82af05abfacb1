"""The TI INA219 current/power monitor (SBOS448G)."""

from __future__ import annotations

from hw.power.current import Counts, CurrentMonitor
from hw.power.words import SensorError

# §8.6.2.1 BADC/SADC: 0X00-0X11 one 9..12-bit sample, 1000 one 12-bit sample, 1001-1111
# 2..128 samples averaged; the time of one ADC conversion in seconds.
_ADC_SECONDS = {0b0000: 84e-6, 0b0001: 148e-6, 0b0010: 276e-6, 0b0011: 532e-6,
                0b1000: 532e-6, 0b1001: 1.06e-3, 0b1010: 2.13e-3, 0b1011: 4.26e-3,
                0b1100: 8.51e-3, 0b1101: 17.02e-3, 0b1110: 34.05e-3, 0b1111: 68.10e-3}


def _adc_seconds(field: int) -> float:
    return _ADC_SECONDS[field if field & 0b1000 else field & 0b0011]


class INA219(CurrentMonitor):
    """TI INA219 current/power monitor (SBOS448G), default address 0x40.

    Registers: Configuration 00h (§8.6.2.1, power-on 0x399F: 32 V bus range, PGA /8 so
    ±320 mV shunt range, 12-bit ADCs, shunt and bus continuous; bit 14 is unused and reads
    0), Shunt Voltage 01h (§8.6.3.1, signed, LSB 10 µV), Bus Voltage 02h (§8.6.3.2, bits
    15..3 with LSB 4 mV, bit 2 unused, CNVR bit 1, OVF bit 0), Power 03h (§8.6.3.3,
    Power_LSB), Current 04h (§8.6.3.4, signed, Current_LSB), Calibration 05h (§8.6.4.1, bit
    0 is void and always reads 0, so Cal is kept even).

    The driver's configuration is 0x3E67: the power-on ranges with 16 samples averaged per
    ADC (8.51 ms each, so a conversion cycle of 17.02 ms), long enough that a sample's four
    register reads (about 2 ms at 100 kHz) seldom meet a conversion; 12 bits unaveraged
    (1.06 ms) would land one in nearly every read.

    CNVR is set when a conversion's results are in the registers and cleared by reading
    Power or writing Config (§8.6.3.2). So a sample reads Power first (clearing CNVR), then
    Shunt, Current and Bus: a CNVR in that Bus read means a conversion landed meanwhile, and
    the sample is read again (a CNVR that never clears, as in a static register image, is
    no landing once two reads agree). The calibration register returns to 0 on a brown-out;
    :meth:`read` then writes the configuration and calibration again and says so in
    ``recalibrated``.

    The INA219 has no id register. :meth:`identify` takes a chip for one whose Config reads
    its power-on value or the driver's own, with the bits that always read 0 at 0 (Config 14,
    Bus 2, Calibration 0); any other Config value gets a reset (RST, bit 15) and must then
    read 0x399F. An INA226 fails: its Config bits 14..12 always read 100b.

    >>> from simulators.power_chips import INA219Model, ShuntInput
    >>> from simulators.smbus import FakeSMBus
    >>> bus = FakeSMBus(1)
    >>> chip = INA219Model(lambda: ShuntInput(amps=1.0, bus_volts=5.1), shunt_ohms=0.1)
    >>> bus.attach(0x40, chip)
    >>> ina = INA219(bus, shunt_ohms=0.1, max_expected_amps=3.2)
    >>> ina.identify()
    True
    >>> ina.configure()
    >>> reading = ina.read()
    >>> round(reading.volts, 3), round(reading.amps, 3), reading.recalibrated
    (5.1, 1.0, False)
    >>> chip.brown_out()
    >>> ina.read().recalibrated
    True
    """

    CHIP = "INA219"
    POWER_ON_CONFIG = 0x399F
    DEFAULT_CONFIG = 0x3E67
    SHUNT_VOLTS_PER_LSB = 10e-6
    BUS_VOLTS_PER_LSB = 4e-3
    _CALIBRATION_SCALE = 0.04096
    _POWER_LSB_PER_CURRENT_LSB = 20
    _CALIBRATION_MASK = 0xFFFE
    _CONVERSION_READY = 0x0002
    _MATH_OVERFLOW = 0x0001
    _CONFIG_ALWAYS_0 = 0x4000
    _BUS_ALWAYS_0 = 0x0004
    _INA226_IDS = (0xFE, 0x5449, 0xFF, 0x226)

    def identity(self) -> str:
        config = self.read_register(self.CONFIG)
        fixed_bits = ((config & self._CONFIG_ALWAYS_0)
                      or self.read_register(self.BUS_VOLTAGE) & self._BUS_ALWAYS_0
                      or self.read_register(self.CALIBRATION) & 1)
        if config in (self.POWER_ON_CONFIG, self.config) and not fixed_bits:
            return ""
        self.write_register(self.CONFIG, self.RESET)
        after_reset = self.read_register(self.CONFIG)
        if after_reset == self.POWER_ON_CONFIG and not fixed_bits:
            return ""
        return (f"{self._named()}config 0x{config:04X}, 0x{after_reset:04X} after a reset "
                f"(an INA219 reads 0x{self.POWER_ON_CONFIG:04X})")

    def _named(self) -> str:
        """"an INA226 (...), " when the chip answers the INA226's id registers."""
        manufacturer_register, manufacturer, die_register, device = self._INA226_IDS
        try:
            ids = (self.read_register(manufacturer_register), self.read_register(die_register))
        except SensorError:  # an INA219 need not answer registers it lacks
            return ""
        if ids[0] == manufacturer and ids[1] >> 4 == device:
            return f"an INA226 (manufacturer id 0x{ids[0]:04X}, die id 0x{ids[1]:04X}), "
        return ""

    def conversion_seconds(self) -> float:
        return _adc_seconds((self.config >> 7) & 0xF) + _adc_seconds((self.config >> 3) & 0xF)

    def shunt_full_scale(self) -> int:
        return 4000 << ((self.config >> 11) & 0b11)  # §8.6.3.1: PGA /1../8, ±40..320 mV

    def _conversion_ready(self) -> bool:
        return bool(self.read_register(self.BUS_VOLTAGE) & self._CONVERSION_READY)

    def _sample(self) -> Counts:
        power = self.read_register(self.POWER)
        shunt = self.read_register(self.SHUNT_VOLTAGE)
        current = self.read_register(self.CURRENT)
        bus = self.read_register(self.BUS_VOLTAGE)
        return Counts(shunt=shunt, bus=bus >> 3, current=current, power=power,
                      overflow=bool(bus & self._MATH_OVERFLOW),
                      landed=bool(bus & self._CONVERSION_READY))
