"""hw/ drivers against a real Linux kernel in the test VM: i2c-stub for power, uinput for the
scanner, gpio-sim for the panel (gpiozero's lgpio pins on the simulated chip). The checks run
inside the VM, in the kit's virtualenv: kernel_drivers.py drives the drivers itself;
agent_devices.py has the running dropkit-agent.service read the devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.images import build_or_reuse_image
from tests.vm.vmboot import BootResult, boot

# The first VM test to ask for the image builds it when it is not cached (minutes).
pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]
HERE = Path(__file__).resolve().parent
# guest.py: the VM's helpers (the gpio-sim chip).
CHECKS = [HERE / "kernel_drivers.py", HERE / "agent_devices.py", HERE / "guest.py"]


def run_checks(script: str, *, stop_agent: bool) -> BootResult:
    """Load i2c-stub (the three power chips) and uinput, then run ``script`` in the VM (the
    script makes its gpio-sim chip)."""
    # The kit's own agent would read these devices too (and grab the scanner).
    stop = "systemctl stop dropkit-agent.service" if stop_agent else ""
    result = boot(build_or_reuse_image(), f"""
set -euo pipefail
{stop}
modprobe i2c-dev
modprobe i2c-stub chip_addr=0x36,0x40,0x41
modprobe uinput
/opt/dropkit/venv/bin/python {script}
""", files=CHECKS)
    print(result.output)
    assert result.returncode == 0, result.output or result.console[-3000:]
    assert "FAIL" not in result.output
    return result


def test_power_scanner_and_panel_drivers_through_the_kernel() -> None:
    result = run_checks("kernel_drivers.py", stop_agent=True)
    assert "all kernel driver checks passed" in result.output


def test_the_running_agent_reads_power_scans_and_its_panel_from_the_kernel() -> None:
    result = run_checks("agent_devices.py", stop_agent=False)
    assert "agent read the kernel's devices" in result.output
