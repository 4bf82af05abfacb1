"""``dropkit preflight`` against a running ``dropkit sim``: every check passes or is a named
skip on a kit in order, and a kit with its mains pulled, its paper out or its broker gone
fails, the check naming what to do.

Real parts: ``dropkit sim`` in a subprocess (its power rig, printer and panel worked through
the staff page's simulator controls), a real Mosquitto and ``dropkit hq``, and
``dropkit preflight`` as the operator runs it. The chips' identity is read through the power
simulators' register-level SMBus (the chips' id registers as their datasheets give them).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from agent.config import PowerConfig
from agent.core.clock import wall_synced
from agent.ops.harness import SimKit, wait_for
from agent.ops.preflight import chip_identity
from simulators.power_chips import CellInput, INA219Model, INA226Model, MAX17048Model, ShuntInput
from simulators.smbus import FakeSMBus
from tests.conftest import MakeStall

ROOT = Path(__file__).resolve().parent.parent
LINE = re.compile(r"^(PASS|WARN|FAIL|SKIP)  (.+?)  +(.*)$")


def preflight(kit: SimKit, *args: str) -> tuple[int, dict[str, tuple[str, str, str]]]:
    """Run it; the exit code and each check's verdict, what it found and what to do."""
    done = subprocess.run([sys.executable, "-m", "agent", "preflight", "--url", kit.url,
                           "--state-dir", str(kit.state_dir), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    checks: dict[str, tuple[str, str, str]] = {}
    name = ""
    for line in done.stdout.splitlines():
        if (found := LINE.match(line)) is not None:
            name = found.group(2).strip()
            checks[name] = (found.group(1), found.group(3), "")
        elif "-> " in line and name:
            verdict, said, _ = checks[name]
            checks[name] = (verdict, said, line.split("-> ", 1)[1])
    assert checks, done.stdout + done.stderr
    return done.returncode, checks


def control(kit: SimKit, device: str, body: dict) -> None:
    answer = kit.request("POST", f"/api/staff/sim/{device}", body, staff=True)
    assert answer.status == 200, answer


def test_preflight_passes_a_kit_in_order_and_names_each_fault_with_what_to_do(
        stall: MakeStall) -> None:
    around = stall({"id": "kit-preflight"}, [("T-1", "Tee", 100, 100)],
                   printer={"status_interval_s": 0.2})
    broker = around.broker
    kit = around.start_kit()
    wait_for(lambda: kit.health()["mode"] == "online", 30, "the kit online")
    assert kit.place([{"sku": "T-1", "qty": 1}]).status == 201
    wait_for(lambda: kit.health()["writes"]["sales"] == 1, 10, "the sale counted")

    code, checks = preflight(kit, "--test-slip", "--buttons")
    verdicts = {name: verdict for name, (verdict, _, _) in checks.items()}
    clock = "PASS" if wall_synced()() else "WARN"  # the host's clock, as the kernel says
    assert verdicts == {
        "kit": "PASS", "power sources": "PASS", "battery": "PASS", "chip identity": "SKIP",
        "printer": "PASS", "test slip": "PASS", "scanner": "PASS", "panel": "PASS",
        "buttons": "SKIP", "broker": "PASS", "HQ": "PASS", "HQ round trip": "SKIP",
        "manifest": "PASS", "storage": "PASS", "clock": clock}, checks
    assert code == 0
    assert "mains and battery present, mains feeds the kit" in checks["power sources"][1]
    assert "bytes written per sale" in checks["storage"][1]
    assert all(checks[name][2] for name in ("chip identity", "buttons", "HQ round trip"))
    # The slip came out of the printer: the simulator read it off the ESC/POS stream.
    slips = [path.read_text() for path in (kit.state_dir / "printer").glob("receipt-*.txt")]
    assert any("printer test slip" in slip and "kit-preflight" in slip for slip in slips)

    control(kit, "power", {"action": "pull_mains"})
    wait_for(lambda: not kit.health()["power"]["sources"]["mains"]["present"], 15,
             "mains gone")
    code, checks = preflight(kit)
    assert code == 1
    verdict, found, do = checks["power sources"]
    assert (verdict, "battery feeds the kit" in found) == ("FAIL", True), checks
    assert "plug the mains supply in" in do
    control(kit, "power", {"action": "restore_mains"})
    wait_for(lambda: kit.health()["power"]["sources"]["mains"]["present"], 15, "mains back")

    control(kit, "paper", {"level": "out"})
    wait_for(lambda: kit.health()["devices"]["printer"]["state"] == "paper_out", 15,
             "paper out seen")
    code, checks = preflight(kit, "--test-slip")
    assert code == 1
    assert checks["printer"][0] == "FAIL" and "load a paper roll" in checks["printer"][2]
    assert checks["test slip"][0] == "FAIL" and "load a paper roll" in checks["test slip"][2]
    assert checks["power sources"][0] == "PASS"
    control(kit, "paper", {"level": "ok"})
    wait_for(lambda: kit.health()["devices"]["printer"]["state"] == "ready", 15, "paper back")

    broker.stop()
    wait_for(lambda: kit.health()["uplink"]["state"] != "connected", 15, "the broker gone")
    code, checks = preflight(kit)
    assert code == 1
    verdict, found, do = checks["broker"]
    assert verdict == "FAIL" and "nothing answers at its address" in found, checks
    assert "start the broker" in do
    assert checks["printer"][0] == "PASS"
    assert kit.stop() == 0


def test_chip_identity_reads_the_chips_id_registers() -> None:
    def shunt() -> ShuntInput:
        return ShuntInput(amps=0.5, bus_volts=5.0)

    def cell() -> CellInput:
        return CellInput(cell_volts=4.0, percent=80.0, rate_percent_per_hour=0.0)

    config = PowerConfig()  # an INA219 on mains at 0x40, an INA226 on the battery at 0x41
    bus = FakeSMBus(1)
    bus.attach(config.mains_address, INA219Model(shunt))
    bus.attach(config.battery_address, INA226Model(shunt))
    bus.attach(config.gauge_address, MAX17048Model(cell))
    identify = chip_identity(config, bus)
    assert identify is not None
    assert identify() == [("mains INA219 at 0x40", "ok"),
                          ("battery INA226 at 0x41", "ok"), ("gauge MAX17048 at 0x36", "ok")]

    wrong = FakeSMBus(1)  # an INA219 fitted where the config says INA226; no gauge
    wrong.attach(config.mains_address, INA219Model(shunt))
    wrong.attach(config.battery_address, INA219Model(shunt))
    answers = dict(chip_identity(config, wrong)())  # type: ignore[misc]
    assert answers["battery INA226 at 0x41"].startswith("answers as another chip ("), answers
    assert answers["gauge MAX17048 at 0x36"] == "does not answer"
