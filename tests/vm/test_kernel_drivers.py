"""hw/ drivers against a real Linux kernel in the test VM: i2c-stub for power, uinput for the
scanner, gpio-sim for the panel (gpiozero's lgpio pins on the simulated chip). The checks run
inside the VM, in the kit's virtualenv, one after the other in one boot (a boot under
emulation costs a minute or more): kernel_drivers.py drives the drivers itself with the kit's
agent stopped; then agent_devices.py starts the agent again and has it read the devices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vm.images import build_or_reuse_image
from tests.vm.vmboot import BootResult, boot

# The first VM test to ask for the image builds it when it is not cached (minutes).
pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]
HERE = Path(__file__).resolve().parent
# guest.py: the VM's helpers (the gpio-sim chip).
CHECKS = [HERE / "kernel_drivers.py", HERE / "agent_devices.py", HERE / "guest.py"]
# The kit's own agent would read these devices too (and grab the scanner) while the drivers
# are checked alone; agent_devices.py restarts it with the devices in its configuration.
SCRIPT = """
set -euo pipefail
systemctl stop dropkit-agent.service
modprobe i2c-dev
modprobe i2c-stub chip_addr=0x36,0x40,0x41
modprobe uinput
for check in kernel_drivers agent_devices; do
    if /opt/dropkit/venv/bin/python "$check.py" > "$check.log" 2>&1
    then echo 0; else echo $?; fi > "$check.rc"
done
"""


@dataclass(frozen=True)
class Check:
    output: str
    returncode: int | None  # None: the boot ended before the check did


@pytest.fixture(scope="module")
def booted() -> BootResult:
    result = boot(build_or_reuse_image(), SCRIPT, files=CHECKS)
    assert not result.timed_out, f"the boot did not end within {result.seconds:.0f} s"
    assert result.returncode == 0, result.output or result.console[-3000:]
    return result


def check(booted: BootResult, name: str) -> Check:
    log, status = booted.share / f"{name}.log", booted.share / f"{name}.rc"
    output = log.read_text(errors="replace") if log.exists() else ""
    print(output)
    return Check(output, int(status.read_text()) if status.exists() else None)


def test_power_scanner_and_panel_drivers_through_the_kernel(booted: BootResult) -> None:
    found = check(booted, "kernel_drivers")
    assert found.returncode == 0, found.output or booted.console[-3000:]
    assert "FAIL" not in found.output
    assert "all kernel driver checks passed" in found.output


def test_the_running_agent_reads_power_scans_and_its_panel_from_the_kernel(
        booted: BootResult) -> None:
    found = check(booted, "agent_devices")
    assert found.returncode == 0, found.output or booted.console[-3000:]
    assert "FAIL" not in found.output
    assert "agent read the kernel's devices" in found.output
