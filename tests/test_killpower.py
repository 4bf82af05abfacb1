"""Back on when mains returns: the daemon leaves the killpower flag only when it halts for
power, the systemd-shutdown hook (image/files/dropkit-killpower) runs [power]
killpower_command only when the flag is there and the halt is a halt or poweroff, and the
next start clears the flag. Real ``dropkit sim`` processes; the hook run as systemd-shutdown
runs it, with the verb as its argument."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.ops.harness import wait_for

HOOK = Path(__file__).parent.parent / "image" / "files" / "dropkit-killpower"


def config_for(tmp_path: Path, state: Path, recorder: Path, marker: Path) -> Path:
    config = tmp_path / "agent.toml"
    config.write_text(f'[kit]\nid = "kit-kp"\nstate_dir = "{state}"\n'
                      f'[power]\nshutdown_delay_s = 1.0\nshutdown_command = "{recorder}"\n'
                      f'killpower_command = "touch {marker}"\n')
    return config


def run_hook(config: Path, verb: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(HOOK), verb], capture_output=True, text=True,
                          timeout=30, env={**os.environ, "DROPKIT_CONFIG": str(config)})


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    script = tmp_path / "poweroff"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    return script


def test_a_halt_for_power_leaves_the_flag_and_the_hook_cuts_power(
        kit_factory: Any, tmp_path: Path, recorder: Path) -> None:
    state, marker = tmp_path / "state", tmp_path / "power-cut"
    config = config_for(tmp_path, state, recorder, marker)
    kit = kit_factory(state, config)
    with kit.client() as client:
        answer = client.post("/api/staff/sim/power", headers=kit.staff,
                             json={"action": "scenario", "name": "drain_to_critical",
                                   "speed": 40})
        assert answer.status_code == 200, answer.text
    assert kit.proc.wait(90) == 0
    flag = state / "killpower"
    assert flag.exists() and "OB" in flag.read_text()
    assert run_hook(config, "reboot").returncode == 0 and not marker.exists()
    done = run_hook(config, "poweroff")
    assert done.returncode == 0 and marker.exists(), done
    assert "the halt was for power" in done.stdout
    marker.unlink()
    assert run_hook(config, "halt").returncode == 0 and marker.exists()
    # Mains back, the kit boots: the flag has done its work, and a later halt leaves none.
    again = kit_factory(state, config)
    wait_for(lambda: not flag.exists(), 10, "the flag cleared at start")
    assert "back on after a halt for power" in "".join(again.log)


def test_a_halt_on_mains_leaves_no_flag_and_the_hook_does_nothing(
        kit_factory: Any, tmp_path: Path, recorder: Path) -> None:
    state, marker = tmp_path / "state", tmp_path / "power-cut"
    config = config_for(tmp_path, state, recorder, marker)
    kit = kit_factory(state, config)
    wait_for(lambda: httpx.get(kit.url + "/api/health", timeout=10).json()["power"]
             ["state"].startswith("OL"), 10, "on line")
    with kit.client() as client:   # the panel's long press, on mains
        answer = client.post("/api/staff/sim/button", headers=kit.staff,
                             json={"button": "offline", "long": True})
        assert answer.status_code == 200, answer.text
    assert kit.proc.wait(60) == 0
    assert not (state / "killpower").exists()
    assert run_hook(config, "poweroff").returncode == 0 and not marker.exists()


def test_the_hook_without_a_command_or_config_harms_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "killpower").write_text("OB\n")
    config = tmp_path / "agent.toml"
    config.write_text(f'[kit]\nstate_dir = "{state}"\n')
    assert run_hook(config, "poweroff").returncode == 0
    marker = tmp_path / "power-cut"
    config.write_text(f'[kit]\nstate_dir = "{state}"\n[power]\nkillpower_command = '
                      f'"touch {marker}"\n')
    (state / "killpower").unlink()            # no flag: the halt was not for power
    assert run_hook(config, "poweroff").returncode == 0 and not marker.exists()
    missing = run_hook(tmp_path / "nothing.toml", "poweroff")
    assert missing.returncode == 1 and "cannot read" in missing.stdout
