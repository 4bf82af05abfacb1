"""The power drivers read what the chip measured: the right chip, a finished conversion, one
conversion per sample, and no saturated reading taken as a measurement.

Register values are worked from the datasheet formulas (INA219 SBOS448G §8.5.1, §8.6.3;
INA226 SBOS547B §6.5.1, §7.1) and stated beside each check; the chip models of
simulators/power_chips.py sit on the byte-level FakeSMBus.
"""

from __future__ import annotations

import errno
import math
from typing import Any

import pytest

from agent.config import PowerConfig
from agent.power.sensors import build_sensors
from hw.power.current import PowerReading
from hw.power.ina219 import INA219
from hw.power.ina226 import INA226
from hw.power.max17048 import MAX17048
from hw.power.words import SensorError, WrongChip
from simulators.power_chips import (
    WORD_TRANSFER_S,
    CellInput,
    INA219Model,
    INA226Model,
    MAX17048Model,
    ShuntInput,
)
from simulators.smbus import FakeSMBus, I2CDevice, WordRegisterDevice


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bus_with(devices: dict[int, I2CDevice]) -> FakeSMBus:
    bus = FakeSMBus(1)
    for address, device in devices.items():
        bus.attach(address, device)
    return bus


def mains() -> ShuntInput:
    return ShuntInput(amps=1.0, bus_volts=5.1)


# -- identity -----------------------------------------------------------------------------

def test_an_ina226_where_the_ina219_is_configured_is_a_named_fault() -> None:
    clock = Clock()
    bus = bus_with({0x40: INA226Model(mains, shunt_ohms=0.1, clock=clock)})
    ina219 = INA219(bus, 0x40, shunt_ohms=0.1, max_expected_amps=3.2)
    clock.now = 1.0  # conversions have run
    # Why it matters: the INA226's bus register holds 5.1 V / 1.25 mV = 4080 counts; read as
    # an INA219's (bits 15..3, 4 mV) that is (4080 >> 3) * 4 mV = 2.04 V: mains "gone".
    ina219.write_register(INA219.CALIBRATION, ina219.calibration.register)
    assert (ina219.read_register(INA219.BUS_VOLTAGE) >> 3) * 4e-3 == pytest.approx(2.04)
    assert not ina219.identify()
    sensors = build_sensors(PowerConfig(), bus)
    assert sensors.mains is not None
    with pytest.raises(WrongChip) as caught:
        sensors.mains.configure()
    message = str(caught.value)
    assert caught.value.errno == errno.ENODEV and isinstance(caught.value, OSError)
    assert "INA219 expected at 0x40" in message
    assert "an INA226 (manufacturer id 0x5449, die id 0x2260)" in message


def test_an_ina219_where_the_ina226_is_configured_is_a_named_fault() -> None:
    bus = bus_with({0x41: INA219Model(mains, shunt_ohms=0.1)})
    with pytest.raises(WrongChip, match=r"INA226 expected at 0x41.*manufacturer id 0x0000"):
        INA226(bus, 0x41).check_identity()


def test_a_gauge_with_another_version_is_a_named_fault() -> None:
    bus = bus_with({0x36: MAX17048Model(lambda: CellInput(3.7, 50.0, 0.0), version=0x0021)})
    with pytest.raises(WrongChip, match=r"MAX17048 expected at 0x36.*VERSION 0x0021"):
        MAX17048(bus).check_identity()


def test_ina219_identity_from_power_on_config_or_its_own_or_after_a_reset() -> None:
    chip = INA219Model(mains, shunt_ohms=0.1)
    ina = INA219(bus_with({0x40: chip}))
    assert ina.identify()                     # power-on Config 0x399F
    ina.configure()
    assert chip.config == ina.config == 0x3E67
    assert ina.identify()                     # the driver's own Config (an agent restart)
    chip.write_register(INA219Model.CONFIG, 0x0007)  # someone else's settings
    assert ina.identify()                     # RST, then Config reads 0x399F
    assert chip.config == 0x399F
    # A register file that keeps what is written (not a chip that resets) is no INA219.
    assert not INA219(bus_with({0x40: WordRegisterDevice({0x00: 0x0007})})).identify()


def test_the_kit_sensors_identify_before_they_configure() -> None:
    from simulators.live_power import SimulatedPower

    sensors = build_sensors(PowerConfig(), SimulatedPower().bus)
    for sensor in (sensors.mains, sensors.battery, sensors.gauge):
        assert sensor is not None
        sensor.configure()   # the rig's chips are the ones [power] names: no fault
        assert sensor.read() is not None


# -- the first conversion -----------------------------------------------------------------

@pytest.mark.parametrize("chip_class", [INA219, INA226])
def test_readings_right_after_configuration_are_not_zeros(chip_class: type) -> None:
    # 1.0 A at 5.1 V, 0.1 ohm. INA219 (Cal 4194, 8.5.1): shunt 10000, current
    # trunc(10000 * 4194 / 4096) = 10239 -> 0.99990234375 A, power trunc(10239 * 1275 / 5000)
    # = 2610 -> 5.09765625 W. INA226 (Cal 0.00512 / (97.65625 uA * 0.1) = 524, 6.5.1):
    # shunt 40000 clamps at 32767 (81.9 mV) -- so 0.5 A: shunt 20000, current
    # trunc(20000 * 524 / 2048) = 5117 -> 0.4997 A, bus 4080, power trunc(5117*4080/20000)
    # = 1043 -> 2.546 W.
    amps = 1.0 if chip_class is INA219 else 0.5
    model_class = INA219Model if chip_class is INA219 else INA226Model
    model = model_class(lambda: ShuntInput(amps=amps, bus_volts=5.1), shunt_ohms=0.1)
    ina = chip_class(bus_with({0x40: model}), shunt_ohms=0.1, max_expected_amps=3.2)
    ina.configure()
    reading = ina.read()
    expected = ((10239 * 3.2 / 32768, 2610 * 20 * 3.2 / 32768) if chip_class is INA219
                else (5117 * 3.2 / 32768, 1043 * 25 * 3.2 / 32768))
    assert (reading.amps, reading.watts) == pytest.approx(expected)
    assert reading.volts == pytest.approx(5.1)


@pytest.mark.parametrize(("chip_class", "config", "cycle_s"), [
    # SBOS448G §8.6.2.1: a cycle is the bus plus the shunt ADC time; 0x3E67 has BADC = SADC =
    # 1100b (16 samples averaged, 8.51 ms each), the power-on 0x399F 0011b (12-bit, 532 us).
    (INA219, 0x3E67, 8.51e-3 + 8.51e-3), (INA219, 0x399F, 532e-6 + 532e-6),
    # SBOS547B §7.1.1: AVG x (VBUSCT + VSHCT); 0x4527 has AVG 010b (16), both CT 100b
    # (1.1 ms); the power-on 0x4127 AVG 000b (1).
    (INA226, 0x4527, 16 * (1.1e-3 + 1.1e-3)), (INA226, 0x4127, 1 * (1.1e-3 + 1.1e-3)),
])
def test_the_first_conversion_is_waited_for_by_the_datasheet_time(
        chip_class: type, config: int, cycle_s: float) -> None:
    # The wait is the cycle at the datasheets' maximum conversion times, 10 % over typical
    # (SBOS448G §7.5: 586 us for 532 us; SBOS547B §6.5: 1.21 ms for 1.1 ms).
    clock = Clock()
    model_class = INA219Model if chip_class is INA219 else INA226Model
    model = model_class(mains, shunt_ohms=0.1, clock=clock)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    ina = chip_class(bus_with({0x40: model}), shunt_ohms=0.1, max_expected_amps=3.2,
                     config=config, sleep=sleep)
    ina.configure()
    assert slept == [pytest.approx(cycle_s * 1.1)]
    # The conversion landed during the wait: one look at the flag says so, no spinning.
    assert model.conversions >= 1
    assert model.bus_seconds == pytest.approx(3 * WORD_TRANSFER_S)  # Config, Cal, the flag
    assert ina.read().volts == pytest.approx(5.1)


# A static register image, as Linux's i2c-stub holds one: no conversion ever lands, the flags
# never change. Words from the datasheet formulas (the VM's images, tests/vm/agent_devices.py):
# INA219, 0.1 ohm / 3.2 A (Current_LSB 97.65625 uA, Power_LSB 20 x LSB, §8.5.1): Shunt 0x1F40
# = 8000 x 10 uV = 80 mV; Bus 1275 << 3 -> 1275 x 4 mV = 5.1 V (CNVR bit 1); Current 8192 ->
# 0.8 A; Power 2090 -> 2090 x 1.953125 mW = 4.08203125 W. INA226, 0.01 ohm / 4.096 A
# (Current_LSB 125 uA, Power_LSB 25 x LSB = 3.125 mW, §6.5.1): Shunt 0xFC18 = -1000 x 2.5 uV =
# -2.5 mV; Bus 2960 x 1.25 mV = 3.7 V; Current 0xF060 = -4000 -> -0.5 A; Power 592 -> 1.85 W;
# Mask/Enable CVRF bit 3.
STATIC_INA219 = {0x00: 0x399F, 0x01: 0x1F40, 0x02: 1275 << 3, 0x03: 2090, 0x04: 8192}
STATIC_INA226 = {0x00: 0x4127, 0x01: 0xFC18, 0x02: 2960, 0x03: 592, 0x04: 0xF060, 0x06: 0,
                 0xFE: 0x5449, 0xFF: 0x2260}
STATIC_GAUGE = {0x02: 49920, 0x04: 0x4B80, 0x08: 0x0012, 0x16: 0x0000, 0x1A: 0x0000}


def static_images(flags_set: bool) -> tuple[dict[int, int], dict[int, int]]:
    """The two images, their conversion-ready flags always set or always clear."""
    ina219, ina226 = dict(STATIC_INA219), dict(STATIC_INA226)
    if flags_set:
        ina219[0x02] |= 0x0002
        ina226[0x06] |= 0x0008
    return ina219, ina226


class CountingImage(WordRegisterDevice):
    """A register image that counts the reads of one register."""

    def __init__(self, registers: dict[int, int], counted: int) -> None:
        super().__init__(registers)
        self.counted, self.reads = counted, 0

    def read_register(self, register: int) -> int:
        self.reads += register == self.counted
        return super().read_register(register)


@pytest.mark.parametrize("flags_set", [True, False])
@pytest.mark.parametrize(("chip_class", "address", "shunt_ohms", "max_amps", "expected"), [
    (INA219, 0x40, 0.1, 3.2, (5.1, 0.08, 0.8, 4.08203125)),
    (INA226, 0x41, 0.01, 4.096, (3.7, -0.0025, -0.5, 1.85)),
])
def test_a_static_register_image_yields_its_readings(
        chip_class: type, address: int, shunt_ohms: float, max_amps: float,
        expected: tuple[float, ...], flags_set: bool) -> None:
    image = static_images(flags_set)[chip_class is INA226]
    chip = CountingImage(image, counted=0x03)  # Power: one read per sample on either chip
    slept: list[float] = []
    ina = chip_class(bus_with({address: chip}), address, shunt_ohms=shunt_ohms,
                     max_expected_amps=max_amps, sleep=slept.append)
    ina.check_identity()
    ina.configure()   # a flag that never sets ends the wait; one always set, at once
    assert len(slept) == 1
    chip.reads = 0
    reading = ina.read()
    assert (reading.volts, reading.shunt_volts, reading.amps, reading.watts) == pytest.approx(
        expected)
    assert not reading.overflow and not reading.recalibrated
    # A flag always set reads as a landing each time; two reads that agree are the sample.
    assert chip.reads == (2 if flags_set else 1)


@pytest.mark.parametrize("flags_set", [True, False])
def test_the_monitor_reads_static_register_images(flags_set: bool) -> None:
    # What the kit in the VM does on i2c-stub: the [power] defaults' chips at 0x40, 0x41, 0x36
    # and the real monitor; the gauge's 75.5 % (0x4B80: 75 + 128/256) and 3.9 V (49920 x
    # 78.125 uV) believed once they held for gauge_confirm_s.
    import asyncio

    from agent.power.monitor import PowerMonitor
    from agent.power.shutdown import ShutdownSteps

    ina219, ina226 = static_images(flags_set)
    bus = bus_with({0x40: WordRegisterDevice(ina219), 0x41: WordRegisterDevice(ina226),
                    0x36: WordRegisterDevice(dict(STATIC_GAUGE))})
    clock = Clock()
    config = PowerConfig(shutdown_command="true")
    monitor = PowerMonitor(build_sensors(config, bus), config, ShutdownSteps.inert(),
                           on_status=lambda status: None, on_event=lambda event: None,
                           clock=clock)

    async def poll_until_charge_known() -> Any:
        for _ in range(200):
            status = await monitor.poll()
            if status is not None and status.ups.percent is not None:
                return status
            clock.now += 0.1
        return None

    try:
        status = asyncio.run(poll_until_charge_known())
    finally:
        monitor.close()
    assert status is not None, "no charge reading in 20 s of polls"
    assert status.ups.percent == 75.5
    assert sorted(status.flags) == ["CHRG", "OL"]
    assert status.sensor_faults == ()
    assert status.mains.volts == pytest.approx(5.1)
    assert status.battery.volts == pytest.approx(3.7)


# -- one conversion per sample ------------------------------------------------------------

def conversion(k: int, shunt_lsb: float, bus_lsb: float, calibration: int,
               current_divisor: int, power_divisor: int, power_k: int
               ) -> tuple[float, float, float]:
    """Conversion k of the ramp below (volts 4.0 + 0.1 k, amps 0.2 + 0.01 k, 0.1 ohm), from
    the datasheet: shunt = round(amps * 0.1 / shunt LSB), bus = round(volts / bus LSB),
    current = trunc(shunt * Cal / divisor), power = trunc(current * bus / divisor); in volts,
    amps (Current_LSB = 3.2 A / 2^15) and watts (Power_LSB = k * Current_LSB)."""
    volts, amps = 4.0 + 0.1 * k, 0.2 + 0.01 * k
    shunt, bus = round(amps * 0.1 / shunt_lsb), round(volts / bus_lsb)
    current = math.trunc(shunt * calibration / current_divisor)
    power = math.trunc(current * bus / power_divisor)
    lsb = 3.2 / 32768
    return bus * bus_lsb, current * lsb, power * power_k * lsb


# INA219 8.5.1: Cal 4194, Current = Shunt x Cal / 4096, Power = Current x Bus / 5000, k 20.
# INA226 6.5.1: Cal trunc(0.00512 / (97.65625 uA * 0.1)) = 524, / 2048, / 20000, k 25.
INA219_FORMULAS = (10e-6, 4e-3, 4194, 4096, 5000, 20)
INA226_FORMULAS = (2.5e-6, 1.25e-3, 524, 2048, 20000, 25)


@pytest.mark.parametrize(("chip_class", "model_class", "formulas"), [
    (INA219, INA219Model, INA219_FORMULAS), (INA226, INA226Model, INA226_FORMULAS)])
def test_a_conversion_landing_mid_read_never_mixes_two(chip_class: type, model_class: type,
                                                       formulas: tuple[Any, ...]) -> None:
    clock = Clock()
    conversions = {"k": -1}

    def ramp() -> ShuntInput:  # each conversion sees the next step of the ramp
        conversions["k"] += 1
        k = conversions["k"] % 40
        return ShuntInput(amps=0.2 + 0.01 * k, bus_volts=4.0 + 0.1 * k)

    model = model_class(ramp, shunt_ohms=0.1, clock=clock)
    ina = chip_class(bus_with({0x40: model}), shunt_ohms=0.1, max_expected_amps=3.2)
    ina.configure()
    table = [conversion(k, *formulas) for k in range(40)]
    landed_mid_read = 0
    for step in range(300):  # start the read at every phase of the conversion cycle
        clock.now = step * 0.37e-3
        before = model.conversions
        reading: PowerReading = ina.read()
        landed_mid_read += model.conversions - before > 0 and model.conversion_ready is False
        triple = (reading.volts, reading.amps, reading.watts)
        assert any(triple == pytest.approx(known) for known in table), (step, triple)
    assert landed_mid_read > 5   # the sweep did meet conversions landing during a read


# -- overflow and alerts ------------------------------------------------------------------

def test_a_saturated_shunt_is_a_fault_not_3_1997_amps() -> None:
    # 4 A through 0.1 ohm = 400 mV, beyond the /8 PGA's 320 mV: the shunt register clamps at
    # 32000 and current = trunc(32000 * 4194 / 4096) = 32765 -> 3.1997 A with OVF clear.
    bus = FakeSMBus(1)
    bus.attach(0x40, INA219Model(lambda: ShuntInput(amps=4.0, bus_volts=5.1), shunt_ohms=0.1))
    bus.attach(0x36, MAX17048Model(lambda: CellInput(3.7, 50.0, 0.0)))
    ina = INA219(bus, shunt_ohms=0.1, max_expected_amps=3.2)
    ina.configure()
    reading = ina.read()
    assert reading.amps == pytest.approx(32765 * 3.2 / 32768) == pytest.approx(3.1997, abs=1e-4)
    assert reading.overflow
    sensors = build_sensors(PowerConfig(battery_chip="none"), bus)
    assert sensors.mains is not None
    sensors.mains.configure()
    with pytest.raises(SensorError, match="beyond what the shunt can measure") as caught:
        sensors.mains.read()
    assert caught.value.errno == errno.ERANGE


def test_the_gauge_alert_flags_reach_the_reading() -> None:
    # STATUS 1Ah: RI (bit 8) is set at power-on; VL (bit 10) when VCELL < VALRT.MIN.
    chip = MAX17048Model(lambda: CellInput(3.0, 10.0, -5.0))
    chip.write_register(MAX17048Model.VALRT, (175 << 8) | 0xFF)  # MIN 175 * 20 mV = 3.5 V
    assert MAX17048(bus_with({0x36: chip})).read().alerts == ("RI", "VL")
