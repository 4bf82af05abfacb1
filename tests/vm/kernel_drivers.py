"""Runs inside the test VM (the kit's own virtualenv): hw/ drivers against a real kernel.

- power: INA219 (0x40), INA226 (0x41) and MAX17048 (0x36) on i2c-stub through i2c-dev. i2c-stub
  keeps plain register memory, so this proves transport and byte order, not chip behaviour (the
  simulators do that). A register image is stored as the chip would put it on the wire, high
  byte first: an SMBus word write sends the low byte of its value first, so the value written is
  the register with its bytes swapped. Its memory never converts: a conversion-ready flag stays
  as written whatever is read (the INA219's CNVR set here, the INA226's CVRF clear), and the
  drivers still take their samples (the wait after configuring is by time).
- scanner: a uinput keyboard typing like a barcode scanner, read by hw.scanner's watcher through
  evdev with grab, unplugged and plugged back.
- panel: hw.panel through gpiozero's lgpio pins (hw.gpiochip) on a gpio-sim chip: a button is a
  line the test pulls down and up through gpio-sim's sysfs ``pull`` (as a switch to ground
  would), an LED a line whose level gpio-sim's ``value`` shows.

Prints one ``PASS name`` or ``FAIL name: why`` line per check and exits 1 on any failure.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

failures: list[str] = []
# Software emulation can stall the VM for a few hundred ms between two keys; the half-scan
# timeout (0.3 s on a kit) is the unit tests' business, not this transport check's.
SCAN_TIMEOUT_S = 2.0
# The panel on the lines of one gpio-sim chip (off a Pi, a pin is the chip's line number).
PANEL_LINES = 8
PANEL_PINS = {"offline_button": 1, "reprint_button": 2, "shutdown_button": None, "mode_led": 5,
              "uplink_led": 6, "power_led": 7}
LONG_PRESS_S = 1.0


def check(name: str, ok: bool, why: str = "") -> None:
    print(f"PASS {name}" if ok else f"FAIL {name}: {why}", flush=True)
    if not ok:
        failures.append(name)


def close(a: float, b: float) -> bool:
    return abs(a - b) < 1e-9 + 1e-6 * abs(b)


def stub_bus() -> int:
    for adapter in Path("/sys/bus/i2c/devices").glob("i2c-*"):
        if "stub" in (adapter / "name").read_text():
            return int(adapter.name.split("-")[1])
    raise SystemExit("FAIL i2c-stub: no stub adapter (modprobe i2c-stub chip_addr=...)")


def panel_chip() -> tuple[int, Path]:
    """A live gpio-sim chip for the panel: its number N (``/dev/gpiochipN``), and the sysfs
    directory of its lines (``sim_gpioK/pull``, ``sim_gpioK/value``)."""
    from guest import make_gpio_sim_chip, settle  # beside this script in the VM

    device = make_gpio_sim_chip("panel", PANEL_LINES)
    settle()  # udev hands the node to group gpio, the agent's
    return (int(device.name.removeprefix("gpiochip")),
            Path("/sys/bus/gpio/devices", device.name).resolve())


def sim_line(lines: Path, part: str, attribute: str) -> Path:
    return lines / f"sim_gpio{PANEL_PINS[part]}" / attribute


def push(lines: Path, button: str, down: bool) -> None:
    """Press (pull the line to ground) or release (back to its pull-up) a panel button."""
    sim_line(lines, button, "pull").write_text("pull-down" if down else "pull-up")


async def levels(lines: Path, led: str, seconds: float) -> set[str]:
    """The levels an LED's line showed over ``seconds``."""
    seen, deadline = set(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen.add(sim_line(lines, led, "value").read_text().strip())
        await asyncio.sleep(0.02)
    return seen


def power_drivers() -> None:
    from smbus2 import SMBus

    from hw.power.ina219 import INA219
    from hw.power.ina226 import INA226
    from hw.power.max17048 import MAX17048
    from hw.power.words import swap_word_bytes

    with SMBus(stub_bus()) as bus:
        def put(address: int, register: int, value: int) -> None:
            bus.write_word_data(address, register, swap_word_bytes(value))

        # INA219: 0.1 ohm, 3.2 A: Current_LSB = 3.2 / 32768 = 97.65625 uA,
        # Cal = trunc(0.04096 / (Current_LSB * 0.1)) = 4194 (0x1062), Power_LSB = 20 * LSB.
        # The INA219 has no id register: identify() takes Config's power-on 0x399F.
        ina219 = INA219(bus, 0x40, shunt_ohms=0.1, max_expected_amps=3.2)
        check("ina219 calibration", ina219.calibration.register == 4194,
              str(ina219.calibration.register))
        put(0x40, 0x00, 0x399F)
        check("ina219 identify", ina219.identify())
        put(0x40, 0x02, (1275 << 3) | 0x2)  # bus 1275 * 4 mV = 5.1 V, CNVR set for good
        ina219.configure()
        written = swap_word_bytes(bus.read_word_data(0x40, 0x05))
        check("ina219 calibration on the wire", written == 4194, hex(written))
        config = swap_word_bytes(bus.read_word_data(0x40, 0x00))
        check("ina219 config on the wire", config == 0x3E67, hex(config))
        put(0x40, 0x01, 0x1F40)  # shunt 8000 * 10 uV = 80 mV
        put(0x40, 0x04, 8192)  # current 8192 * 97.65625 uA = 0.8 A
        put(0x40, 0x03, 2090)  # power 2090 * 1.953125 mW = 4.08203125 W
        reading = ina219.read()
        check("ina219 volts", close(reading.volts, 5.1), str(reading.volts))
        check("ina219 shunt volts", close(reading.shunt_volts, 0.08), str(reading.shunt_volts))
        check("ina219 amps", close(reading.amps, 0.8), str(reading.amps))
        check("ina219 watts", close(reading.watts, 4.08203125), str(reading.watts))
        check("ina219 no overflow", not reading.overflow and not reading.recalibrated)

        # INA226: ids TI 0x5449, die 0x2260; 0.01 ohm, 4.096 A: Current_LSB = 125 uA,
        # Cal = trunc(0.00512 / (125e-6 * 0.01)) = 4096, Power_LSB = 25 * LSB = 3.125 mW.
        ina226 = INA226(bus, 0x41, shunt_ohms=0.01, max_expected_amps=4.096)
        put(0x41, 0xFE, 0x5449)
        put(0x41, 0xFF, 0x2260)
        check("ina226 identify", ina226.identify())
        put(0x41, 0x06, 0x0000)  # mask/enable: CVRF clear for good (no conversion lands)
        ina226.configure()
        config = swap_word_bytes(bus.read_word_data(0x41, 0x00))
        check("ina226 config on the wire", config == 0x4527, hex(config))
        put(0x41, 0x01, 0xFC18)  # shunt -1000 * 2.5 uV = -2.5 mV (charging)
        put(0x41, 0x02, 2960)  # bus 2960 * 1.25 mV = 3.7 V
        put(0x41, 0x04, 0xF060)  # current -4000 * 125 uA = -0.5 A
        put(0x41, 0x03, 592)  # power 592 * 3.125 mW = 1.85 W
        reading = ina226.read()
        check("ina226 volts", close(reading.volts, 3.7), str(reading.volts))
        check("ina226 shunt volts", close(reading.shunt_volts, -0.0025),
              str(reading.shunt_volts))
        check("ina226 amps", close(reading.amps, -0.5), str(reading.amps))
        check("ina226 watts", close(reading.watts, 1.85), str(reading.watts))
        check("ina226 no overflow", not reading.overflow and not reading.recalibrated)

        # MAX17048: VCELL 78.125 uV/LSB; SOC high byte %, low byte 1/256 %; CRATE 0.208 %/h.
        gauge = MAX17048(bus, 0x36)
        put(0x36, 0x08, 0x0012)
        check("max17048 identify", gauge.identify())
        put(0x36, 0x02, 49920)  # 49920 * 78.125 uV = 3.9 V
        put(0x36, 0x04, 0x4B80)  # 75 + 128/256 = 75.5 %
        put(0x36, 0x16, 0xFFF6)  # -10 * 0.208 = -2.08 %/h
        put(0x36, 0x1A, 0x0000)  # status: no alerts
        reading = gauge.read()
        check("max17048 cell volts", close(reading.cell_volts, 3.9), str(reading.cell_volts))
        check("max17048 percent", close(reading.percent, 75.5), str(reading.percent))
        check("max17048 rate", close(reading.rate_percent_per_hour, -2.08),
              str(reading.rate_percent_per_hour))

        # The agent's sensors identify the chips [power] names before configuring them, and
        # refuse a chip that is not the one named (no reading taken from it).
        from agent.config import PowerConfig
        from agent.power.sensors import build_sensors
        from hw.power.words import WrongChip

        sensors = build_sensors(PowerConfig(bus=stub_bus()), bus)
        for name in ("gauge", "battery", "mains"):
            sensor = getattr(sensors, name)
            try:
                sensor.configure()
                check(f"agent identifies its {name} chip", True)
            except OSError as exc:
                check(f"agent identifies its {name} chip", False, str(exc))
        swapped = build_sensors(PowerConfig(bus=stub_bus(), mains_address=0x41,
                                            battery_address=0x40, gauge_address=0x41), bus)
        for name, expected in (("mains", "INA219 expected at 0x41"),
                               ("battery", "INA226 expected at 0x40"),
                               ("gauge", "MAX17048 expected at 0x41")):
            try:
                getattr(swapped, name).configure()
                check(f"agent refuses a wrong {name} chip", False, "it was accepted")
            except WrongChip as exc:
                check(f"agent refuses a wrong {name} chip", expected in str(exc), str(exc))


async def scanner_driver() -> None:
    from evdev import InputDevice, UInput, ecodes, list_devices

    from hw.scanner import ScannerMatch, ScannerWatcher
    from simulators.scanner import VirtualScanner

    name = "VM Barcode Scanner"
    keys = [code for code in ecodes.KEY if 0 < code < 0x100]
    scans: asyncio.Queue = asyncio.Queue()
    presence: asyncio.Queue = asyncio.Queue()
    watcher = ScannerWatcher(scans.put_nowait, lambda n, present: presence.put_nowait(present),
                             match=ScannerMatch(names=("VM Barcode",)), rescan_interval=0.2,
                             scan_timeout=SCAN_TIMEOUT_S)
    watching = asyncio.create_task(watcher.run())

    def plug() -> UInput:
        return UInput({ecodes.EV_KEY: keys}, name=name, vendor=0x05E0, product=0x1200)

    async def type_text(device: UInput, text: str) -> None:
        # At a scanner's pace: each key report, then a pause (evdev's buffer for a reader is
        # small, and a real scanner types a few hundred keys a second).
        for event in VirtualScanner().scan(text):
            device.write_event(event)
            if event.type == ecodes.EV_SYN:
                await asyncio.sleep(0.001)

    scanner = plug()
    check("scanner present", await asyncio.wait_for(presence.get(), 5))
    # Grabbed: no other reader gets the keys (a console would not see the scan).
    [path] = [p for p in list_devices() if Path(f"/sys/class/input/{Path(p).name}/device/name")
              .read_text().strip() == name]
    other = InputDevice(path)
    try:
        other.grab()
        check("scanner grabbed", False, "a second grab succeeded")
    except OSError as exc:
        check("scanner grabbed", exc.errno == errno.EBUSY, str(exc))
    other.close()
    barcodes = ["4006381333931", "SKU-ZINE-07", "a1B2!c3#D4$", "0" * 40]
    for text in barcodes:
        await type_text(scanner, text)
    got = [(await asyncio.wait_for(scans.get(), 5)).text for _ in barcodes]
    check("scanner decodes through the kernel", got == barcodes, repr(got))
    scanner.close()  # unplugged
    check("scanner gone", not await asyncio.wait_for(presence.get(), 5))
    plugged = time.monotonic()
    scanner = plug()
    check("scanner back", await asyncio.wait_for(presence.get(), 5))
    await type_text(scanner, "AFTER-REPLUG")
    again = await asyncio.wait_for(scans.get(), 5)
    resumed = time.monotonic() - plugged
    check("scanning resumes within 2 s of the replug",
          again.text == "AFTER-REPLUG" and resumed < 2, f"{again.text} after {resumed:.2f} s")
    scanner.close()
    watching.cancel()
    await asyncio.gather(watching, return_exceptions=True)


async def panel_driver() -> None:
    # lgpio makes a notification FIFO in $LG_WD, else in the working directory: the 9p share.
    os.environ.setdefault("LG_WD", tempfile.mkdtemp(prefix="lgpio-"))
    from hw.gpiochip import chip_pin_factory
    from hw.panel import Panel, PanelEvent, PanelFact

    chip, lines = panel_chip()
    events: asyncio.Queue[PanelEvent] = asyncio.Queue()

    async def next_fact(timeout: float = 5) -> tuple[str, PanelFact] | None:
        try:
            event = await asyncio.wait_for(events.get(), timeout)
        except TimeoutError:
            return None
        return event.button, event.fact

    async def press(button: str, seconds: float = 0.3) -> None:
        push(lines, button, down=True)
        await asyncio.sleep(seconds)
        push(lines, button, down=False)

    factory = chip_pin_factory(chip)
    with Panel(asyncio.get_running_loop(), events.put_nowait, PANEL_PINS,
               long_press=LONG_PRESS_S, pin_factory=factory) as panel:
        # gpiozero asked for pull-ups; the kernel passed the bias on to gpio-sim.
        buttons = ("offline_button", "reprint_button")
        pulls = [sim_line(lines, b, "pull").read_text().strip() for b in buttons]
        values = [sim_line(lines, b, "value").read_text().strip() for b in buttons]
        check("panel buttons pulled up through the kernel",
              pulls == ["pull-up"] * 2 and values == ["1"] * 2, f"{pulls} {values}")
        await press("reprint_button")
        facts = [await next_fact(), await next_fact()]
        check("panel reprint press and release",
              facts == [("reprint", PanelFact.PRESSED), ("reprint", PanelFact.RELEASED)],
              str(facts))
        await press("offline_button")
        facts = [await next_fact(), await next_fact()]
        check("panel offline press and release",
              facts == [("offline", PanelFact.PRESSED), ("offline", PanelFact.RELEASED)],
              str(facts))
        push(lines, "offline_button", down=True)
        pressed = time.monotonic()
        first = await next_fact()
        fact = await next_fact(LONG_PRESS_S + 10)
        held = time.monotonic() - pressed
        push(lines, "offline_button", down=False)
        check("panel long press reports held",
              first == ("offline", PanelFact.PRESSED) and fact == ("offline", PanelFact.HELD)
              and held >= LONG_PRESS_S, f"{first} {fact} after {held:.2f} s")
        fact = await next_fact(1)
        check("panel long press then released", fact == ("offline", PanelFact.RELEASED), str(fact))

        panel.set_led("mode", "on")
        seen = await levels(lines, "mode_led", 0.1)
        check("panel LED on", seen == {"1"}, str(seen))
        panel.set_led("mode", "off")
        seen = await levels(lines, "mode_led", 0.1)
        check("panel LED off", seen == {"0"}, str(seen))
        panel.set_led("uplink", "blink_fast")
        seen = await levels(lines, "uplink_led", 1)
        check("panel LED blinks", seen == {"0", "1"}, str(seen))
    factory.close()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    power_drivers()
    asyncio.run(scanner_driver())
    asyncio.run(panel_driver())
    print(f"{len(failures)} failed" if failures else "all kernel driver checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
