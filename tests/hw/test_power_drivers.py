"""Power drivers (the hw.power package) against the register-level fake bus and chip models.

Every expected number is worked out by hand from the datasheet formula quoted next to it
(INA219 SBOS448G, INA226 SBOS547B, MAX17048 data sheet register sections).
"""

from __future__ import annotations

import doctest
import errno

import pytest
from smbus2 import i2c_msg

import hw.power.ina219
import hw.power.ina226
import hw.power.max17048
import simulators.smbus
from hw.power.ina219 import INA219
from hw.power.ina226 import INA226
from hw.power.max17048 import MAX17048
from hw.power.words import SensorError, swap_word_bytes
from simulators.power_chips import CellInput, INA219Model, INA226Model, MAX17048Model, ShuntInput
from simulators.smbus import FakeSMBus, I2CDevice, WordRegisterDevice


class Clock:
    """A hand-moved clock for the chip models' conversion-ready flags."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bus_with(address: int, device: I2CDevice) -> FakeSMBus:
    bus = FakeSMBus(1)
    bus.attach(address, device)
    return bus


# -- byte order ---------------------------------------------------------------------------

def test_swap_word_bytes_swaps_and_is_its_own_inverse() -> None:
    assert swap_word_bytes(0x1234) == 0x3412
    assert swap_word_bytes(swap_word_bytes(0xBEEF)) == 0xBEEF
    assert swap_word_bytes(0x00FF) == 0xFF00


def test_smbus_word_read_is_little_endian_so_the_driver_must_swap() -> None:
    # INA219 8.6.3.2: bus voltage = (register >> 3) * 4 mV; 0x5DA2 >> 3 = 2996 -> 11.984 V,
    # bit 1 (CNVR) set, bit 0 (OVF) clear.
    chip = WordRegisterDevice({INA219.BUS_VOLTAGE: 0x5DA2, INA219.CALIBRATION: 0x1062})
    bus = bus_with(0x40, chip)
    raw = bus.read_word_data(0x40, INA219.BUS_VOLTAGE)
    # The chip sends 0x5D then 0xA2; the SMBus word protocol puts the first byte low.
    assert raw == 0xA25D
    assert raw != 0x5DA2
    # A driver that forgot to swap would see (0xA25D >> 3) * 4 mV = 5195 * 4 mV = 20.78 V.
    assert (raw >> 3) * 4e-3 == pytest.approx(20.78)
    assert bus.read_i2c_block_data(0x40, INA219.BUS_VOLTAGE, 2) == [0x5D, 0xA2]
    chip.registers[INA219.BUS_VOLTAGE] = 0x5DA0  # as after a read of Power cleared CNVR
    reading = INA219(bus).read()
    assert reading.volts == pytest.approx(11.984)
    assert not reading.overflow


def test_driver_writes_the_register_msb_first() -> None:
    chip = WordRegisterDevice()
    bus = bus_with(0x40, chip)
    INA219(bus).write_register(INA219.CALIBRATION, 0x1062)
    assert chip.registers[INA219.CALIBRATION] == 0x1062
    # Through the raw SMBus call the word's low byte goes first: 0x6210 lands as 0x1062.
    bus.write_word_data(0x40, INA219.CONFIG, 0x9F39)
    assert chip.registers[INA219.CONFIG] == 0x399F


def test_write_register_refuses_values_wider_than_16_bits() -> None:
    with pytest.raises(ValueError):
        INA219(bus_with(0x40, WordRegisterDevice())).write_register(INA219.CONFIG, 0x10000)


# -- INA219 -------------------------------------------------------------------------------

def test_ina219_calibration_worked_example() -> None:
    # INA219 8.5.1: Current_LSB = 3.2 A / 2^15 = 97.65625 uA;
    # Cal = trunc(0.04096 / (97.65625 uA * 0.1 ohm)) = trunc(4194.304) = 4194 = 0x1062;
    # Power_LSB = 20 * Current_LSB = 1.953125 mW.
    calibration = INA219.calibration_for(shunt_ohms=0.1, max_expected_amps=3.2)
    assert calibration.current_lsb == pytest.approx(97.65625e-6)
    assert calibration.register == 4194 == 0x1062
    assert calibration.power_lsb == pytest.approx(1.953125e-3)


def test_ina219_calibration_keeps_bit_0_clear() -> None:
    # INA219 8.6.4.1: bit 0 of the calibration register is void. 0.1 ohm, 1 A:
    # Current_LSB = 1 / 32768 = 30.517578125 uA; 0.04096 / 3.0517578125e-6 = 13421.77
    # -> trunc 13421, odd -> the chip holds 13420 = 0x346C, so the driver writes that.
    assert INA219.calibration_for(0.1, 1.0).register == 13420 == 0x346C


@pytest.mark.parametrize(("ohms", "amps"), [(0.0001, 0.001), (10.0, 100.0), (0.0, 1.0)])
def test_ina219_calibration_out_of_range_is_refused(ohms: float, amps: float) -> None:
    # 0.0001 ohm, 1 mA: Cal = 0.04096 / (3.05e-8 * 1e-4) ~ 1.3e7 > 0xFFFE;
    # 10 ohm, 100 A: Cal = 0.04096 / (3.05e-3 * 10) = 1.34 -> 1, and bit 0 is void -> 0.
    with pytest.raises(ValueError):
        INA219.calibration_for(ohms, amps)


def test_ina219_decodes_every_register() -> None:
    # Calibration 0x1062 (0.1 ohm, 3.2 A): Current_LSB 97.65625 uA, Power_LSB 1.953125 mW.
    chip = WordRegisterDevice({
        INA219.CALIBRATION: 0x1062,
        # 8.6.3.2: 0x5DA1 >> 3 = 2996 -> 2996 * 4 mV = 11.984 V; OVF (bit 0), CNVR (bit 1)
        # clear, as the sample's first read (Power) left it: no conversion landed since.
        INA219.BUS_VOLTAGE: 0x5DA1,
        # 8.6.3.1: 0xF060 is -4000 in two's complement -> -4000 * 10 uV = -40 mV.
        INA219.SHUNT_VOLTAGE: 0xF060,
        # 8.6.3.4: 0xF000 is -4096 -> -4096 * 97.65625 uA = -0.4 A.
        INA219.CURRENT: 0xF000,
        # 8.6.3.3: 0x0A00 = 2560 -> 2560 * 1.953125 mW = 5.0 W.
        INA219.POWER: 0x0A00,
    })
    reading = INA219(bus_with(0x40, chip), shunt_ohms=0.1, max_expected_amps=3.2).read()
    assert reading.volts == pytest.approx(11.984)
    assert reading.shunt_volts == pytest.approx(-0.040)
    assert reading.amps == pytest.approx(-0.4)
    assert reading.watts == pytest.approx(5.0)
    assert reading.overflow
    assert not reading.recalibrated


def test_ina219_reading_from_the_chip_model() -> None:
    # 1.0 A through 0.1 ohm at 5.1 V, calibration 4194 (Current_LSB 97.65625 uA):
    # 8.6.3.1 shunt = 1.0 A * 0.1 ohm = 100 mV -> 100 mV / 10 uV = 10000 counts -> 0.1 V;
    # 8.5.1 current = 10000 * 4194 / 4096 = 10239.26 -> 10239 -> 10239 * 97.65625 uA
    #   = 0.99990234375 A;
    # 8.6.3.2 bus = 5.1 V / 4 mV = 1275 -> 5.1 V;
    # 8.5.1 power = 10239 * 1275 / 5000 = 2610.94 -> 2610 -> 2610 * 1.953125 mW = 5.09765625 W.
    chip = INA219Model(lambda: ShuntInput(amps=1.0, bus_volts=5.1), shunt_ohms=0.1)
    ina = INA219(bus_with(0x40, chip), shunt_ohms=0.1, max_expected_amps=3.2)
    ina.configure()
    # The driver's config 0x3E67: BRNG 32 V, PGA /8, BADC = SADC = 1100b (16 samples, 8.51 ms).
    assert chip.config == 0x3E67 and chip.calibration == 0x1062
    reading = ina.read()
    assert reading.shunt_volts == pytest.approx(0.1)
    assert reading.amps == pytest.approx(0.99990234375)
    assert reading.volts == pytest.approx(5.1)
    assert reading.watts == pytest.approx(5.09765625)
    assert not reading.overflow and not reading.recalibrated


def test_ina219_recalibrates_after_brown_out() -> None:
    chip = INA219Model(lambda: ShuntInput(amps=1.0, bus_volts=5.1), shunt_ohms=0.1)
    ina = INA219(bus_with(0x40, chip), shunt_ohms=0.1, max_expected_amps=3.2)
    ina.configure()
    assert not ina.read().recalibrated
    chip.brown_out()
    # Power-on values: config 0x399F, calibration 0, so current and power read 0 (8.6.1).
    assert chip.calibration == 0
    assert chip.read_register(INA219Model.CURRENT) == 0
    assert ina.read().recalibrated
    assert chip.calibration == 4194
    again = ina.read()
    assert not again.recalibrated
    assert again.amps == pytest.approx(0.99990234375)


def test_ina219_reads_before_configure_recalibrate_too() -> None:
    # A chip fresh from power-on has calibration 0: the first read writes it.
    chip = INA219Model(lambda: ShuntInput(amps=0.5, bus_volts=5.0), shunt_ohms=0.1)
    reading = INA219(bus_with(0x40, chip)).read()
    assert reading.recalibrated
    assert chip.calibration == 4194


def test_ina219_model_cnvr_sets_per_conversion_and_clears_on_power_read_or_config() -> None:
    # 8.6.3.2: CNVR is set when a conversion's results are in; reading Power or writing Config
    # clears it. At 0x399F a cycle is 532 us + 532 us (8.6.2.1, 12-bit shunt and bus).
    clock = Clock()
    chip = INA219Model(lambda: ShuntInput(1.0, 5.1), shunt_ohms=0.1, clock=clock)
    assert chip.conversion_seconds() == pytest.approx(1.064e-3)
    chip.write_register(INA219Model.CONFIG, 0x399F)
    assert not chip.read_register(INA219Model.BUS) & 0x2
    clock.now = 1.0
    assert chip.read_register(INA219Model.BUS) & 0x2
    chip.read_register(INA219Model.POWER)
    assert not chip.read_register(INA219Model.BUS) & 0x2
    clock.now = 2.0
    chip.write_register(INA219Model.CONFIG, 0x399F)
    assert not chip.read_register(INA219Model.BUS) & 0x2


def test_ina219_math_overflow() -> None:
    # Calibration for 0.1 ohm, 1 A: Cal 13420, Current_LSB 30.517578125 uA. At 2 A:
    # shunt = 0.2 V / 10 uV = 20000 (inside the /8 PGA's 32000); current = 20000 * 13420
    # / 4096 = 65527 > 32767 -> OVF set, the register saturates at 32767 -> 0.99997 A.
    chip = INA219Model(lambda: ShuntInput(amps=2.0, bus_volts=5.0), shunt_ohms=0.1)
    ina = INA219(bus_with(0x40, chip), shunt_ohms=0.1, max_expected_amps=1.0)
    ina.configure()
    reading = ina.read()
    assert reading.overflow
    assert reading.amps == pytest.approx(32767 * 1.0 / 32768)


def test_ina219_model_clamps_shunt_to_the_pga_range_and_ignores_read_only_writes() -> None:
    # PGA /8 (config bits 12..11 = 11): +-320 mV = +-32000 counts. 5 A * 0.1 ohm = 500 mV.
    amps = {"value": 5.0}
    clock = Clock()
    chip = INA219Model(lambda: ShuntInput(amps["value"], bus_volts=5.0), shunt_ohms=0.1,
                       clock=clock)

    def shunt_after_a_conversion() -> int:
        clock.now += 1.0
        return chip.read_register(INA219Model.SHUNT)

    assert chip.read_register(INA219Model.SHUNT) == 0        # power-on: no conversion yet
    assert shunt_after_a_conversion() == 32000
    amps["value"] = -5.0                                      # -32000 as two's complement
    assert shunt_after_a_conversion() == 0x10000 - 32000 == 0x8300
    # PGA /1 (bits 12..11 = 00): +-40 mV = +-4000 counts.
    chip.write_register(INA219Model.CONFIG, 0x399F & ~0x1800)
    assert shunt_after_a_conversion() == 0x10000 - 4000
    amps["value"] = 5.0
    assert shunt_after_a_conversion() == 4000
    chip.write_register(INA219Model.BUS, 0x1234)
    assert chip.read_register(INA219Model.BUS) >> 3 == 1250   # 5.0 V / 4 mV
    chip.write_register(INA219Model.CONFIG, 0x8000)           # RST: power-on values
    assert chip.config == 0x399F


# -- INA226 -------------------------------------------------------------------------------

def test_ina226_calibration_worked_example() -> None:
    # INA226 6.5.1: Current_LSB = 4.096 A / 2^15 = 125 uA; Cal = 0.00512 / (125 uA * 0.01 ohm)
    # = 4096 = 0x1000; Power_LSB = 25 * Current_LSB = 3.125 mW.
    calibration = INA226.calibration_for(shunt_ohms=0.01, max_expected_amps=4.096)
    assert calibration.current_lsb == pytest.approx(125e-6)
    assert calibration.register == 4096 == 0x1000
    assert calibration.power_lsb == pytest.approx(3.125e-3)
    # 0.002 ohm, 10 A: Current_LSB = 305.17578125 uA; 0.00512 / 6.103515625e-7 = 8388.608
    # -> 8388 = 0x20C4.
    assert INA226.calibration_for(0.002, 10.0).register == 8388 == 0x20C4
    # 0.01 ohm, 0.5 A: 0.00512 / (15.2587890625 uA * 0.01) = 33554.4 > 0x7FFF (15 bits).
    with pytest.raises(ValueError):
        INA226.calibration_for(0.01, 0.5)


def test_ina226_decodes_every_register() -> None:
    # Calibration 0x1000 (0.01 ohm, 4.096 A): Current_LSB 125 uA, Power_LSB 3.125 mW.
    chip = WordRegisterDevice({
        INA226.CALIBRATION: 0x1000,
        # 7.1.7 Mask/Enable: 0x0004 = OVF (bit 2); CVRF (bit 3) clear: no conversion landed.
        INA226.MASK_ENABLE: 0x0004,
        # 7.1.3: 0x0B90 = 2960 -> 2960 * 1.25 mV = 3.7 V.
        INA226.BUS_VOLTAGE: 0x0B90,
        # 7.1.2: 0xE890 is -6000 -> -6000 * 2.5 uV = -15 mV.
        INA226.SHUNT_VOLTAGE: 0xE890,
        # 7.1.5: 0xD120 is -12000 -> -12000 * 125 uA = -1.5 A.
        INA226.CURRENT: 0xD120,
        # 7.1.4: 0x06F0 = 1776 -> 1776 * 3.125 mW = 5.55 W.
        INA226.POWER: 0x06F0,
    })
    reading = INA226(bus_with(0x40, chip), shunt_ohms=0.01, max_expected_amps=4.096).read()
    assert reading.volts == pytest.approx(3.7)
    assert reading.shunt_volts == pytest.approx(-0.015)
    assert reading.amps == pytest.approx(-1.5)
    assert reading.watts == pytest.approx(5.55)
    assert reading.overflow and not reading.recalibrated


@pytest.mark.parametrize(("amps", "shunt", "current", "power"), [
    # 1.5 A discharge through 0.01 ohm at 3.7 V, Cal 4096:
    # shunt = 15 mV / 2.5 uV = 6000; current = 6000 * 4096 / 2048 = 12000 -> 1.5 A;
    # bus = 3.7 V / 1.25 mV = 2960; power = 12000 * 2960 / 20000 = 1776 -> 5.55 W.
    (1.5, 0.015, 1.5, 5.55),
    # 0.5 A charging: shunt -2000 -> -5 mV; current -4000 -> -0.5 A;
    # power = |-4000| * 2960 / 20000 = 592 -> 592 * 3.125 mW = 1.85 W.
    (-0.5, -0.005, -0.5, 1.85),
])
def test_ina226_reading_from_the_chip_model(amps: float, shunt: float, current: float,
                                            power: float) -> None:
    chip = INA226Model(lambda: ShuntInput(amps=amps, bus_volts=3.7), shunt_ohms=0.01)
    ina = INA226(bus_with(0x41, chip), 0x41, shunt_ohms=0.01, max_expected_amps=4.096)
    ina.configure()
    reading = ina.read()
    assert reading.volts == pytest.approx(3.7)
    assert reading.shunt_volts == pytest.approx(shunt)
    assert reading.amps == pytest.approx(current)
    assert reading.watts == pytest.approx(power)


def test_ina226_identify() -> None:
    model = INA226Model(lambda: ShuntInput(0.0, 0.0))
    assert INA226(bus_with(0x40, model)).identify()
    # 7.1.10: bits 15..4 are the device (0x226), bits 3..0 the die revision: any revision.
    assert INA226(bus_with(0x40, WordRegisterDevice({0xFE: 0x5449, 0xFF: 0x2261}))).identify()
    # Another TI part (device 0x227), or an INA219, which has no id registers.
    assert not INA226(bus_with(0x40, WordRegisterDevice({0xFE: 0x5449, 0xFF: 0x2270}))
                      ).identify()
    assert not INA226(bus_with(0x40, INA219Model(lambda: ShuntInput(0.0, 0.0)))).identify()


def test_ina226_model_cvrf_sets_per_conversion_and_clears_on_mask_enable_read() -> None:
    # 7.1.7: CVRF is set when a conversion's results are in, cleared by reading Mask/Enable
    # or writing Config. 0x4527: AVG 16 x (1.1 ms + 1.1 ms) = 35.2 ms (7.1.1).
    clock = Clock()
    chip = INA226Model(lambda: ShuntInput(1.0, 3.7), shunt_ohms=0.01, clock=clock)
    chip.write_register(INA226Model.CONFIG, 0x4527)
    assert chip.conversion_seconds() == pytest.approx(35.2e-3)
    assert not chip.read_register(INA226Model.MASK_ENABLE) & 0x8
    clock.now = 0.5
    assert chip.read_register(INA226Model.MASK_ENABLE) & 0x8
    assert not chip.read_register(INA226Model.MASK_ENABLE) & 0x8


def test_ina226_math_overflow() -> None:
    # 0.01 ohm, 1 A: Current_LSB 30.517578125 uA, Cal = 0.00512 / 3.0517578125e-7 = 16777.
    # At 3 A: shunt = 30 mV / 2.5 uV = 12000; current = 12000 * 16777 / 2048 = 98302 > 32767.
    chip = INA226Model(lambda: ShuntInput(amps=3.0, bus_volts=3.7), shunt_ohms=0.01)
    ina = INA226(bus_with(0x40, chip), shunt_ohms=0.01, max_expected_amps=1.0)
    ina.configure()
    assert ina.read().overflow


def test_ina226_register_masks_and_reset() -> None:
    chip = INA226Model(lambda: ShuntInput(0.0, 3.7))
    chip.write_register(INA226Model.CALIBRATION, 0xFFFF)
    assert chip.calibration == 0x7FFF                      # 7.1.6: bit 15 reserved
    chip.write_register(INA226Model.CONFIG, 0x0000)
    assert chip.config == 0x4000                           # 7.1.1: bits 14..12 read 100b
    chip.write_register(INA226Model.MASK_ENABLE, 0xFFFF)
    assert chip.read_register(INA226Model.MASK_ENABLE) & 0xFC03 == 0xFC03
    chip.write_register(INA226Model.MANUFACTURER_ID, 0)
    assert chip.read_register(INA226Model.MANUFACTURER_ID) == 0x5449
    chip.write_register(INA226Model.CONFIG, 0x8000)        # RST
    assert (chip.config, chip.calibration, chip.mask_enable) == (0x4127, 0, 0)


def test_ina226_recalibrates_after_brown_out() -> None:
    chip = INA226Model(lambda: ShuntInput(1.5, 3.7), shunt_ohms=0.01)
    ina = INA226(bus_with(0x41, chip), 0x41, shunt_ohms=0.01, max_expected_amps=4.096)
    ina.configure()
    chip.brown_out()
    assert ina.read().recalibrated
    assert chip.calibration == 4096
    assert not ina.read().recalibrated


# -- MAX17048 -----------------------------------------------------------------------------

def test_max17048_decodes_vcell_soc_crate() -> None:
    chip = WordRegisterDevice({
        # VCELL: 0xB900 = 47360 -> 47360 * 78.125 uV = 3.7 V.
        MAX17048.VCELL: 0xB900,
        # SOC: high byte 0x57 = 87 %, low byte 0x80 = 128/256 = 0.5 % -> 87.5 %.
        MAX17048.SOC: 0x5780,
        # CRATE: 0xFFCE is -50 -> -50 * 0.208 %/hr = -10.4 %/hr.
        MAX17048.CRATE: 0xFFCE,
        # STATUS: 0x1100 = RI (bit 8) and HD (bit 12).
        MAX17048.STATUS: 0x1100,
    })
    reading = MAX17048(bus_with(0x36, chip)).read()
    assert reading.cell_volts == pytest.approx(3.7)
    assert reading.percent == 87.5
    assert reading.rate_percent_per_hour == pytest.approx(-10.4)
    assert reading.reset_indicator and reading.soc_low
    assert not (reading.voltage_high or reading.voltage_low or reading.voltage_reset
                or reading.soc_changed)


def test_max17048_reading_from_the_chip_model() -> None:
    # 3.7 V / 78.125 uV = 47360; 87.5 % * 256 = 22400; -10.4 / 0.208 = -50: the same
    # registers as above, now computed by the model and read over the bus.
    cell = CellInput(cell_volts=3.7, percent=87.5, rate_percent_per_hour=-10.4)
    chip = MAX17048Model(lambda: cell)
    bus = bus_with(0x36, chip)
    assert chip.read_register(MAX17048Model.VCELL) == 47360
    assert chip.read_register(MAX17048Model.SOC) == 22400
    assert chip.read_register(MAX17048Model.CRATE) == 0xFFCE
    reading = MAX17048(bus).read()
    assert (reading.percent, round(reading.cell_volts, 6)) == (87.5, 3.7)
    assert reading.rate_percent_per_hour == pytest.approx(-10.4)
    assert reading.reset_indicator                 # RI is set at power-on
    # Registers span two byte addresses: a 4-byte read runs from VCELL on into SOC.
    assert bus.read_i2c_block_data(0x36, MAX17048.VCELL, 4) == [0xB9, 0x00, 0x57, 0x80]


def test_max17048_settings_at_power_on() -> None:
    gauge = MAX17048(bus_with(0x36, MAX17048Model(lambda: CellInput(3.8, 60.0, 0.0),
                                                  chip_id=0x2A)))
    settings = gauge.read_settings()
    assert not settings.sleep_enabled and not settings.hibernating   # MODE 0x0000
    # HIBRT 0x8030: HibThr 0x80 = 128 * 0.208 %/hr = 26.624 %/hr; ActThr 0x30 = 48 * 1.25 mV.
    assert settings.hibernate_threshold_percent_per_hour == pytest.approx(26.624)
    assert settings.active_threshold_volts == pytest.approx(0.060)
    # CONFIG 0x971C: RCOMP 0x97 = 151; ATHD 0x1C = 28 -> empty alert at 32 - 28 = 4 %.
    assert settings.rcomp == 151
    assert settings.empty_alert_percent == 4
    assert not settings.alert
    # VALRT 0x00FF: MIN 0 * 20 mV = 0 V, MAX 255 * 20 mV = 5.1 V.
    assert settings.alert_min_volts == 0.0
    assert settings.alert_max_volts == pytest.approx(5.1)
    # VRESET/ID 0x962A: VRESET = 0x96 >> 1 = 75 * 40 mV = 3.0 V; ID = 0x2A.
    assert settings.reset_volts == pytest.approx(3.0)
    assert settings.chip_id == 0x2A


@pytest.mark.parametrize(("version", "expected"), [(0x0012, True), (0x0011, True),
                                                   (0x0000, False), (0x0112, False)])
def test_max17048_identify_by_version(version: int, expected: bool) -> None:
    # VERSION reads 0x001X on MAX17048/MAX17049 parts.
    chip = MAX17048Model(lambda: CellInput(3.8, 60.0, 0.0), version=version)
    gauge = MAX17048(bus_with(0x36, chip))
    assert gauge.identify() is expected
    assert gauge.version() == version


def test_max17048_alerts_latch_until_cleared() -> None:
    cell = {"value": CellInput(cell_volts=3.6, percent=10.0, rate_percent_per_hour=-20.0)}
    chip = MAX17048Model(lambda: cell["value"])
    gauge = MAX17048(bus_with(0x36, chip))
    gauge.clear_alerts()
    assert not gauge.read().reset_indicator
    # SOC crosses the 4 % empty threshold (CONFIG.ATHD): HD and CONFIG.ALRT.
    cell["value"] = CellInput(3.4, 3.0, -20.0)
    reading = gauge.read()
    assert reading.soc_low
    assert gauge.read_settings().alert
    gauge.clear_alerts()
    assert not gauge.read().soc_low                  # still below, but not crossed again
    assert not gauge.read_settings().alert
    # VALRT.MIN = 0xA0 * 20 mV = 3.2 V; the cell falls to 3.1 V: VL.
    gauge.write_register(MAX17048.VALRT, 0xA0FF)
    cell["value"] = CellInput(3.1, 2.0, -20.0)
    assert gauge.read().voltage_low


def test_max17048_read_only_registers_and_reset_command() -> None:
    chip = MAX17048Model(lambda: CellInput(3.7, 87.5, 0.0))
    gauge = MAX17048(bus_with(0x36, chip))
    gauge.clear_alerts()
    gauge.write_register(MAX17048.VCELL, 0x0000)
    gauge.write_register(MAX17048.VERSION, 0x0000)
    assert gauge.read().cell_volts == pytest.approx(3.7)
    assert gauge.identify()
    gauge.write_register(MAX17048.CONFIG, 0x9700)
    gauge.write_register(0xFE, 0x5400)               # CMD: power-on reset
    assert gauge.read().reset_indicator
    assert gauge.read_settings().empty_alert_percent == 4


# -- failures -----------------------------------------------------------------------------

@pytest.mark.parametrize("driver", [INA219, INA226, MAX17048])
def test_absent_chip_is_a_sensor_error_with_errno_121(driver: type) -> None:
    bus = FakeSMBus(1)
    with pytest.raises(SensorError) as caught:
        driver(bus).read()
    error = caught.value
    assert isinstance(error, OSError)
    assert error.errno == errno.EREMOTEIO == 121
    assert error.address == driver.DEFAULT_ADDRESS
    assert error.chip == driver.CHIP
    assert isinstance(error.__cause__, OSError)
    assert f"0x{driver.DEFAULT_ADDRESS:02x}" in str(error)


def test_injected_errors_fail_that_many_calls_then_clear() -> None:
    bus = bus_with(0x36, MAX17048Model(lambda: CellInput(3.7, 50.0, 0.0)))
    gauge = MAX17048(bus)
    bus.inject_errors(0x36, count=2, code=errno.EIO)
    for _ in range(2):
        with pytest.raises(SensorError) as caught:
            gauge.version()
        assert caught.value.errno == errno.EIO
        assert caught.value.register == MAX17048.VERSION
    assert gauge.identify()


def test_random_errors_are_seeded_and_limited_to_their_addresses() -> None:
    def pattern(seed: int) -> list[bool]:
        bus = FakeSMBus(1, seed=seed)
        bus.attach(0x36, MAX17048Model(lambda: CellInput(3.7, 50.0, 0.0)))
        bus.attach(0x40, INA219Model(lambda: ShuntInput(0.0, 5.0)))
        bus.set_error_rate(0.3, addresses=[0x36])
        failures = []
        for _ in range(200):
            try:
                bus.read_word_data(0x36, MAX17048.VERSION)
                failures.append(False)
            except OSError as exc:
                assert exc.errno == errno.EREMOTEIO
                failures.append(True)
            bus.read_word_data(0x40, INA219.CONFIG)   # never fails
        return failures

    first = pattern(seed=7)
    assert first == pattern(seed=7)
    assert first != pattern(seed=8)
    assert 30 < sum(first) < 90


def test_sensor_unplugged_then_plugged_back() -> None:
    chip = INA226Model(lambda: ShuntInput(1.5, 3.7), shunt_ohms=0.01)
    bus = bus_with(0x41, chip)
    ina = INA226(bus, 0x41, shunt_ohms=0.01, max_expected_amps=4.096)
    ina.configure()
    assert ina.read().amps == pytest.approx(1.5)
    unplugged = bus.detach(0x41)
    with pytest.raises(SensorError) as caught:
        ina.read()
    assert caught.value.errno == errno.EREMOTEIO
    chip.brown_out()                                  # it powers up again when plugged
    bus.attach(0x41, unplugged)
    reading = ina.read()
    assert reading.recalibrated
    assert reading.amps == pytest.approx(1.5)


# -- the fake bus's SMBus surface ---------------------------------------------------------

def test_fake_bus_byte_and_block_calls() -> None:
    chip = WordRegisterDevice({0x02: 0x5DA2, 0x05: 0x1062})
    bus = bus_with(0x40, chip)
    assert bus.read_byte_data(0x40, 0x02) == 0x5D     # MSB first
    assert bus.read_byte(0x40) == 0x5D                 # the pointer stays on 0x02
    bus.write_byte(0x40, 0x05)
    assert bus.read_byte(0x40) == 0x10
    bus.write_byte_data(0x40, 0x05, 0xFF)              # one byte: the chip latches nothing
    assert chip.registers[0x05] == 0x1062
    bus.write_i2c_block_data(0x40, 0x05, [0x20, 0x00])
    assert chip.registers[0x05] == 0x2000
    bus.write_quick(0x40)
    with pytest.raises(ValueError):
        bus.read_i2c_block_data(0x40, 0x02, 33)
    with pytest.raises(ValueError):
        bus.write_byte_data(0x40, 0x05, 256)
    with pytest.raises(ValueError):
        bus.write_word_data(0x40, 0x05, -1)


def test_fake_bus_i2c_rdwr_with_smbus2_messages() -> None:
    chip = WordRegisterDevice({0x02: 0x5DA2})
    bus = bus_with(0x40, chip)
    pointer, reply = i2c_msg.write(0x40, [0x02]), i2c_msg.read(0x40, 2)
    bus.i2c_rdwr(pointer, reply)
    assert list(reply) == [0x5D, 0xA2]
    bus.i2c_rdwr(i2c_msg.write(0x40, [0x05, 0x10, 0x62]))
    assert chip.registers[0x05] == 0x1062
    with pytest.raises(OSError) as caught:
        bus.i2c_rdwr(i2c_msg.write(0x41, [0x00]))
    assert caught.value.errno == errno.EREMOTEIO


@pytest.mark.parametrize(("call", "args"), [
    ("write_quick", ()), ("read_byte", ()), ("write_byte", (0,)), ("read_byte_data", (0,)),
    ("write_byte_data", (0, 0)), ("read_word_data", (0,)), ("write_word_data", (0, 0)),
    ("read_i2c_block_data", (0, 2)), ("write_i2c_block_data", (0, [0, 0])),
])
def test_fake_bus_nacks_every_call_to_an_empty_address(call: str, args: tuple) -> None:
    with pytest.raises(OSError) as caught:
        getattr(FakeSMBus(1), call)(0x48, *args)
    assert caught.value.errno == errno.EREMOTEIO


def test_fake_bus_open_close_context_pec_and_addresses() -> None:
    with FakeSMBus(1) as bus:
        bus.attach(0x40, WordRegisterDevice())
        bus.pec = True
        assert bus.pec == 1
        assert bus.addresses() == [0x40]
        with pytest.raises(ValueError):
            bus.attach(0x40, WordRegisterDevice())
        with pytest.raises(OSError) as caught:
            bus.attach(0x80, WordRegisterDevice())
        assert caught.value.errno == errno.EINVAL
    assert bus.pec == 0
    with pytest.raises(OSError) as caught:
        bus.read_word_data(0x40, 0)
    assert caught.value.errno == errno.EBADF
    bus.open(1)
    assert bus.read_word_data(0x40, 0) == 0
    unopened = FakeSMBus()
    with pytest.raises(OSError):
        unopened.read_byte(0x40)


def test_docstring_examples_run() -> None:
    for module in (hw.power.ina219, hw.power.ina226, hw.power.max17048, simulators.smbus):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
