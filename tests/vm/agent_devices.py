"""Runs inside the test VM: the running dropkit-agent.service reads power from i2c-stub, a
scan from a uinput scanner and its panel on a gpio-sim chip (``[panel] chip``), through its own
sandbox, and shows them in /api/health and /api/events; its panel LEDs show on the chip's lines.
Prints ``PASS``/``FAIL`` lines; exits 1 on any failure."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.request
from functools import partial
from pathlib import Path

from evdev import UInput, ecodes
from kernel_drivers import (  # beside this script in the VM
    PANEL_PINS,
    SCAN_TIMEOUT_S,
    check,
    failures,
    levels,
    panel_chip,
    push,
    stub_bus,
)
from smbus2 import SMBus

from hw.power.words import swap_word_bytes
from simulators.scanner import VirtualScanner

AGENT = "http://127.0.0.1:8080"
# Register images (value as the chip holds it): mains INA219 at 5.1 V and 0.8 A with its
# calibration for 0.1 ohm / 3.2 A; battery INA226 at 3.7 V charging 0.5 A (0.01 ohm / 4.096 A);
# the gauge at 75.5 % and 3.9 V. i2c-stub's memory never converts: the conversion-ready flags
# (INA219 CNVR, INA226 CVRF) stay set whatever is read, and the drivers still take a sample.
IMAGES = {0x40: {0x00: 0x399F, 0x01: 0x1F40, 0x02: (1275 << 3) | 2, 0x03: 2090, 0x04: 8192,
                 0x05: 4194},
          0x41: {0x00: 0x4127, 0x01: 0xFC18, 0x02: 2960, 0x03: 592, 0x04: 0xF060, 0x05: 4096,
                 0x06: 0x0008, 0xFE: 0x5449, 0xFF: 0x2260},
          0x36: {0x02: 49920, 0x04: 0x4B80, 0x08: 0x0012, 0x16: 0x0000, 0x1A: 0x0000}}


def stream_ticket() -> str:
    """A ticket for the staff event stream (scans are staff's), from the agent's staff token."""
    token = next(path.read_text().strip() for path in (
        Path("/etc/dropkit/staff-token"), Path("/var/lib/dropkit/staff-token")) if path.exists())
    request = urllib.request.Request(AGENT + "/api/staff/stream-ticket", method="POST",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)["ticket"]


def health() -> dict:
    with urllib.request.urlopen(AGENT + "/api/health", timeout=5) as answer:
        return json.load(answer)


def wait_for(probe, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if value := probe():
                return value
        except OSError:
            pass
        time.sleep(0.2)
    return None


def latch_is(latched: bool) -> bool:
    return ("staff_latch" in health()["mode_reasons"]) == latched


async def panel(lines: Path) -> None:
    """The offline button toggles the staff latch; the LEDs show power, uplink and the latch."""
    state = wait_for(lambda: (p := health()["devices"]["panel"])["state"] == "ready" and p, 10)
    check("agent has the panel on the gpio-sim chip", bool(state),
          health()["devices"]["panel"])
    if not state:
        return
    # On mains with no uplink: power on, uplink off, mode off (offline for the uplink).
    seen = {led: await levels(lines, led, 1) for led in ("power_led", "uplink_led", "mode_led")}
    check("panel LEDs show mains, no uplink, offline",
          seen == {"power_led": {"1"}, "uplink_led": {"0"}, "mode_led": {"0"}}, seen)
    for latched in (True, False):
        push(lines, "offline_button", down=True)
        await asyncio.sleep(0.3)
        push(lines, "offline_button", down=False)
        check(f"an offline press {'sets' if latched else 'releases'} the staff latch",
              bool(wait_for(partial(latch_is, latched), 10)), health()["mode_reasons"])
        # Forced offline, the mode LED blinks slowly (1 s on, 1 s off) while the agent sets
        # the pattern again twice a second. The agent takes up to 0.5 s to show a change.
        await asyncio.sleep(1)
        seen = await levels(lines, "mode_led", 2.5)
        check(f"mode LED {'blinks' if latched else 'is off'}",
              seen == ({"0", "1"} if latched else {"0"}), seen)


def swapped_chips(config: Path, kit_config: str, bus: int) -> None:
    """The agent configured with its two current monitors' addresses swapped: each sensor
    finds the other chip there, and refuses it with a fault naming the address and what
    answered (never a reading of the wrong chip)."""
    config.write_text(kit_config + f"\n[power]\nbus = {bus}\nmains_address = 0x41\n"
                      "battery_address = 0x40\n")
    subprocess.run(["systemctl", "restart", "dropkit-agent.service"], check=True)
    faults = wait_for(lambda: (f := health()["power"]["sensor_faults"])
                      and {"mains", "battery"} <= set(f) and f, 60)
    check("agent refuses the swapped chips", bool(faults), health()["power"])
    power = health()["power"]
    check("no reading from a wrong chip", power["sources"]["mains"]["volts"] is None
          and power["sources"]["battery"]["volts"] is None, power["sources"])
    journal = subprocess.run(["journalctl", "-u", "dropkit-agent.service", "-o", "cat",
                              "--no-pager", "-n", "300"], capture_output=True, text=True).stdout
    for named in ("INA219 expected at 0x41, but another chip answered there",
                  "INA226 expected at 0x40, but another chip answered there"):
        check(f"the fault says: {named}", named in journal, journal[-1500:])


def main() -> int:
    bus = stub_bus()
    with SMBus(bus) as smbus:
        for address, registers in IMAGES.items():
            for register, value in registers.items():
                smbus.write_word_data(address, register, swap_word_bytes(value))
    chip, lines = panel_chip()
    config = Path("/etc/dropkit/agent.toml")
    kit_config = config.read_text() + (
        f'\n[scanner]\nnames = "VM Barcode"\nscan_timeout_s = {SCAN_TIMEOUT_S}\n'
        f"[panel]\nchip = {chip}\n" + "".join(f"{part} = {-1 if pin is None else pin}\n"
                                             for part, pin in PANEL_PINS.items()))
    config.write_text(kit_config + f"\n[power]\nbus = {bus}\n")
    scanner = UInput({ecodes.EV_KEY: [c for c in ecodes.KEY if 0 < c < 0x100]},
                     name="VM Barcode Scanner", vendor=0x05E0, product=0x1200)
    subprocess.run(["systemctl", "restart", "dropkit-agent.service"], check=True)

    power = wait_for(lambda: (p := health()["power"])["ups"]["percent"] is not None and p, 30)
    check("agent reads power", power is not None, "no power reading in 30 s")
    if power:
        check("mains volts", power["sources"]["mains"]["volts"] == 5.1, power["sources"])
        check("battery volts", power["sources"]["battery"]["volts"] == 3.7, power["sources"])
        check("battery percent", power["ups"]["percent"] == 75.5, power["ups"])
        check("on line, charging", power["state"].split() == ["OL", "CHRG"], power["state"])
        check("no sensor faults", power["sensor_faults"] == [], power["sensor_faults"])
    scanners = wait_for(lambda: health()["devices"]["scanners"], 10)
    check("agent has the scanner", scanners == ["VM Barcode Scanner"], scanners)

    seen: list[str] = []
    stream = urllib.request.urlopen(AGENT + "/api/events?ticket=" + stream_ticket(), timeout=20)
    threading.Thread(target=lambda: seen.extend(line.decode() for line in stream),
                     daemon=True).start()
    time.sleep(0.5)
    for event in VirtualScanner().scan("SAMPLE-1"):
        scanner.write_event(event)
        if event.type == ecodes.EV_SYN:
            time.sleep(0.001)
    scan = wait_for(lambda: next((line for line in seen if '"kind": "sku"' in line), None), 10)
    check("a scan reaches the staff page's events", scan is not None and "SAMPLE-1" in scan,
          seen[-5:])
    asyncio.run(panel(lines))
    swapped_chips(config, kit_config, bus)
    print(f"{len(failures)} failed" if failures else "agent read the kernel's devices")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
