"""hw/ drivers against a real Linux kernel in the test VM: i2c-stub for power, uinput for the
scanner. The checks themselves run inside the VM (kernel_drivers.py, in the kit's virtualenv)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.vmboot import boot, build_or_reuse_image

pytestmark = pytest.mark.vm
HERE = Path(__file__).resolve().parent

SCRIPT = """
set -euo pipefail
# The kit's own agent would read these devices too (and grab the scanner): stop it first.
systemctl stop dropkit-agent.service
modprobe i2c-dev
modprobe i2c-stub chip_addr=0x36,0x40,0x41
modprobe uinput
/opt/dropkit/venv/bin/python kernel_drivers.py
"""


def test_power_and_scanner_drivers_through_the_kernel() -> None:
    result = boot(build_or_reuse_image(), SCRIPT, files=[HERE / "kernel_drivers.py"])
    print(result.output)
    assert result.returncode == 0, result.output
    assert "all kernel driver checks passed" in result.output
    assert "FAIL" not in result.output


AGENT_SCRIPT = """
set -euo pipefail
modprobe i2c-dev
modprobe i2c-stub chip_addr=0x36,0x40,0x41
modprobe uinput
/opt/dropkit/venv/bin/python agent_devices.py
"""


def test_the_running_agent_reads_power_and_scans_from_the_kernel() -> None:
    result = boot(build_or_reuse_image(), AGENT_SCRIPT, files=[HERE / "agent_devices.py"])
    print(result.output)
    assert result.returncode == 0, result.output or result.console[-3000:]
    assert "agent read the kernel's devices" in result.output
