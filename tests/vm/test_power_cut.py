"""The power cut with the kit's own units in the test VM, two boots of one disk: the running
agent on battery at 6 % (i2c-stub images) shuts down, leaves the killpower flag and powers
the VM off; systemd-shutdown's dropkit-killpower hook runs ``[power] killpower_command`` at
the end of that halt (it writes a mark on the console, where a HAT would cut the power); the
next boot (mains back) clears the flag, and the agent takes orders again with the sale from
before the cut. The checks run inside the VM: power_cut.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.vm.images import build_or_reuse_image, persistent_disk
from tests.vm.vmboot import boot

pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]
HERE = Path(__file__).resolve().parent
FILES = [HERE / "power_cut.py", HERE / "agent_devices.py", HERE / "kernel_drivers.py",
         HERE / "guest.py"]
KILLPOWER_MARK = "DROPKIT-KILLPOWER-RAN"
SCRIPT = """
set -euo pipefail
modprobe i2c-dev
modprobe i2c-stub chip_addr=0x36,0x40,0x41
/opt/dropkit/venv/bin/python power_cut.py {mode}
"""


def ran_killpower(console: str) -> bool:
    """The command's own line (the hook's "running ..." line names the mark too, not last)."""
    return re.search(rf"(^|\s){KILLPOWER_MARK}\s*$", console, re.MULTILINE) is not None


def test_a_halt_for_power_runs_killpower_and_the_kit_comes_back(tmp_path: Path) -> None:
    image = build_or_reuse_image()
    disk = persistent_disk(image, tmp_path / "kit.qcow2")
    halted = boot(image, SCRIPT.format(mode="halt"), files=FILES, disk=disk,
                  workdir=tmp_path / "halt")
    print(halted.output)
    assert not halted.timed_out, f"the halt for power did not end within {halted.seconds:.0f} s"
    assert "PASS agent on battery" in halted.output, halted.output or halted.console[-3000:]
    assert "FAIL" not in halted.output, halted.output
    assert halted.returncode is None, "the script finished: the agent did not power off"
    assert ran_killpower(halted.console), halted.console[-3000:]
    order = tmp_path / "order.txt"
    order.write_text((halted.share / "order.txt").read_text())

    booted = boot(image, SCRIPT.format(mode="boot"), files=[*FILES, order], disk=disk,
                  workdir=tmp_path / "boot")
    print(booted.output)
    assert not booted.timed_out, f"the boot after the cut did not end within {booted.seconds:.0f} s"
    assert booted.returncode == 0, (booted.output or "") + booted.console[-3000:]
    assert "FAIL" not in booted.output
    assert "the kit came back after the power cut" in booted.output
    assert not ran_killpower(booted.console)  # its runner's poweroff is no halt for power
