"""The TI INA226 current/power monitor (SBOS547B)."""

from __future__ import annotations

from hw.power.current import Counts, CurrentMonitor

# §7.1.1: AVG bits 11..9 (samples averaged), VBUSCT bits 8..6 and VSHCT bits 5..3 (seconds).
_AVERAGES = (1, 4, 16, 64, 128, 256, 512, 1024)
_CONVERSION_SECONDS = (140e-6, 204e-6, 332e-6, 588e-6, 1.1e-3, 2.116e-3, 4.156e-3, 8.244e-3)


class INA226(CurrentMonitor):
    """TI INA226 current/power monitor (SBOS547B), default address 0x40.

    Registers: Configuration 00h (§7.1.1, power-on 0x4127: no averaging, 1.1 ms conversions,
    shunt and bus continuous; bits 14..12 always read 100b), Shunt Voltage 01h (§7.1.2,
    signed, LSB 2.5 µV), Bus Voltage 02h (§7.1.3, LSB 1.25 mV), Power 03h (§7.1.4,
    Power_LSB = 25 × Current_LSB), Current 04h (§7.1.5, signed), Calibration 05h (§7.1.6, 15
    bits), Mask/Enable 06h (§7.1.7: CVRF conversion ready bit 3, cleared by reading this
    register or writing Config; OVF bit 2), Manufacturer ID FEh (§7.1.9, 0x5449 "TI"), Die
    ID FFh (§7.1.10, 0x2260: device 0x226, revision 0).

    The driver's configuration is 0x4527, Linux's ina2xx default: 16 averages of 1.1 ms
    conversions, a cycle of 35.2 ms. A sample reads Mask/Enable (clearing CVRF), the four
    measurement registers, then Mask/Enable again: a CVRF there means a conversion landed
    meanwhile, and the sample is read again (see :meth:`CurrentMonitor.read`).

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
    POWER_ON_CONFIG = 0x4127
    DEFAULT_CONFIG = 0x4527
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

    def identity(self) -> str:
        """TI's manufacturer id and device id 0x226 (any die revision), or what was read."""
        manufacturer = self.read_register(self.MANUFACTURER_ID)
        die = self.read_register(self.DIE_ID)
        if manufacturer == self.TI_MANUFACTURER_ID and die >> 4 == self.INA226_DEVICE_ID:
            return ""
        return (f"manufacturer id 0x{manufacturer:04X}, die id 0x{die:04X} (an INA226 reads "
                f"0x{self.TI_MANUFACTURER_ID:04X}, 0x{self.INA226_DEVICE_ID:03X}x)")

    def conversion_seconds(self) -> float:
        config = self.config
        return _AVERAGES[(config >> 9) & 7] * (_CONVERSION_SECONDS[(config >> 6) & 7]
                                                + _CONVERSION_SECONDS[(config >> 3) & 7])

    def shunt_full_scale(self) -> int:
        return 0x7FFF  # §7.1.2: ±81.9175 mV

    def _conversion_ready(self) -> bool:
        return bool(self.read_register(self.MASK_ENABLE) & self._CONVERSION_READY)

    def _sample(self) -> Counts:
        self.read_register(self.MASK_ENABLE)
        bus = self.read_register(self.BUS_VOLTAGE)
        shunt = self.read_register(self.SHUNT_VOLTAGE)
        current = self.read_register(self.CURRENT)
        power = self.read_register(self.POWER)
        flags = self.read_register(self.MASK_ENABLE)
        return Counts(shunt=shunt, bus=bus, current=current, power=power,
                      overflow=bool(flags & self._MATH_OVERFLOW),
                      landed=bool(flags & self._CONVERSION_READY))
