"""The TI INA226 current/power monitor (SBOS547B)."""

from __future__ import annotations

from hw.power.current import CurrentMonitor


class INA226(CurrentMonitor):
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

