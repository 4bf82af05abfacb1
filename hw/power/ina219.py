"""The TI INA219 current/power monitor (SBOS448G)."""

from __future__ import annotations

from hw.power.current import CurrentMonitor


class INA219(CurrentMonitor):
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

