"""Runs inside the test VM: the power cut with the kit's own units, over two boots of one disk.

``halt``: the running dropkit-agent.service on i2c-stub register images, first on mains (a sale
taken), then on battery at 6 %: it counts down, runs its shutdown sequence, leaves the
killpower flag and powers the VM off (``systemctl poweroff``, its default command); at the end
of that halt systemd-shutdown runs the dropkit-killpower hook, whose ``killpower_command``
writes :data:`KILLPOWER_MARK` on the console (a kit's HAT would cut the power there). The
script never finishes: the VM goes down around it.

``boot``: the VM booted again on that disk (mains back: the HAT powered the Pi): the agent's
start cleared the flag and found its shutdown intent; on mains images it takes orders again
once mains is steady, and the sale taken before the cut is there.

Prints ``PASS``/``FAIL`` lines; exits 1 on any failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

from agent_devices import AGENT, IMAGES, health, wait_for  # beside this script in the VM
from kernel_drivers import check, failures, stub_bus
from smbus2 import SMBus

from hw.power.words import swap_word_bytes

CONFIG = Path("/etc/dropkit/agent.toml")
FLAG = Path("/var/lib/dropkit/killpower")
ORDER_FILE = Path("order.txt")  # on the share: the host carries it to the second boot
KILLPOWER_MARK = "DROPKIT-KILLPOWER-RAN"
# On mains, the pack low (not critical): the gauge at 10 % (0x0A00), charging +10.4 %/h
# (50 x 0.208); the monitors as agent_devices.py's images (5.1 V mains, 3.7 V charging).
ON_MAINS = {**IMAGES, 0x36: {**IMAGES[0x36], 0x04: 0x0A00, 0x16: 50}}
# Mains gone: the INA219 reads 0 V and 0 A (CNVR left set, as i2c-stub keeps it); the INA226
# (0.01 ohm, Current_LSB 125 uA, Power_LSB 3.125 mW) at 3.5 V discharging 1 A: shunt 1 A x
# 0.01 ohm / 2.5 uV = 4000, bus 3.5 V / 1.25 mV = 2800, current 1 A / 125 uA = 8000, power
# 3.5 W / 3.125 mW = 1120; the gauge at 6 % (0x0600, critical below 8 %), 3.5 V (44800 x
# 78.125 uV), -20.8 %/h (-100 x 0.208 as 0xFF9C). Only the measurement registers: the agent's
# configuration and calibration stay.
ON_BATTERY = {0x40: {0x01: 0, 0x02: 0x0002, 0x03: 0, 0x04: 0},
              0x41: {0x01: 4000, 0x02: 2800, 0x03: 1120, 0x04: 8000},
              0x36: {0x02: 44800, 0x04: 0x0600, 0x16: 0xFF9C}}


def put(images: dict[int, dict[int, int]]) -> None:
    with SMBus(stub_bus()) as bus:
        for address, registers in images.items():
            for register, value in registers.items():
                bus.write_word_data(address, register, swap_word_bytes(value))


def configure_agent() -> None:
    """The image's config with [power] on the stub's bus, a short countdown, and a
    killpower_command that shows on the console when the hook runs it."""
    kit_config = CONFIG.read_text().split("\n[power]\n")[0]
    CONFIG.write_text(kit_config + f"\n[power]\nbus = {stub_bus()}\nshutdown_delay_s = 2.0\n"
                      f"killpower_command = '/bin/sh -c \"echo {KILLPOWER_MARK} >/dev/console\"'\n")
    subprocess.run(["systemctl", "restart", "dropkit-agent.service"], check=True)


def ready_on_mains(seconds: float) -> dict | None:
    """Health once the agent takes orders on mains (``degraded`` counts: the VM has no GPIO
    chip for the image's panel), the shutdown intent cleared."""
    return wait_for(lambda: (h := health())["status"] != "stopping"
                    and h["power"]["state"].split()[0] == "OL" and h, seconds)


def journal() -> str:
    return subprocess.run(["journalctl", "-b", "-u", "dropkit-agent.service", "-o", "cat",
                           "--no-pager"], capture_output=True, text=True).stdout


def halt() -> int:
    put(ON_MAINS)
    configure_agent()
    up = ready_on_mains(60)
    check("agent takes orders on mains", bool(up), str(health()))
    order_id = str(uuid.uuid4())
    request = urllib.request.Request(
        AGENT + "/api/orders", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"order_id": order_id, "lines": [{"sku": "SAMPLE-1", "qty": 1}],
                         "payment": {"method": "cash"}}).encode())
    with urllib.request.urlopen(request, timeout=10) as answer:
        check("a sale on mains is taken", answer.status == 201, str(answer.status))
    ORDER_FILE.write_text(order_id)
    put(ON_BATTERY)
    on_battery = wait_for(lambda: (p := health()["power"])["state"].split()[0] == "OB" and p, 30)
    check("agent on battery", bool(on_battery), str(health()["power"]))
    print("waiting for the agent's shutdown to power the VM off", flush=True)
    time.sleep(240)  # the VM goes down around this process
    check("the agent powers the kit off", False, f"still up; power {health()['power']}")
    return 1


def boot() -> int:
    # The agent's start at boot may come after this script's: wait for what it says then.
    said = wait_for(lambda: "power is safe again" in (text := journal()) and text, 120) \
        or journal()
    check("the start at boot clears the killpower flag",
          "the kit is back on after a halt for power" in said and not FLAG.exists(),
          said[-1500:])
    check("it finds its shutdown intent", "no orders until power is safe again" in said,
          said[-1500:])
    put(ON_MAINS)
    configure_agent()
    up = ready_on_mains(60)
    check("taking orders again on mains", bool(up), str(health()))
    order_id = ORDER_FILE.read_text().strip()
    with urllib.request.urlopen(f"{AGENT}/api/orders/{order_id}", timeout=10) as answer:
        check("the sale before the cut is there", answer.status == 200, str(answer.status))
    print(f"{len(failures)} failed" if failures else "the kit came back after the power cut")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit({"halt": halt, "boot": boot}[sys.argv[1]]())
