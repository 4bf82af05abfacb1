"""The kit image boots under QEMU with systemd as init and the agent comes up on its own.

Two boots of one persistent disk made over the cached image (see ``vmboot.py``): the first is the
kit's first boot (kit id pinned, secrets made and shown), the second must keep them. What the
VM found comes back in ``result.json`` from ``guest.py``; the figures are also on the console.
Run apart with ``pytest -m vm``; ``-s`` prints the figures.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.vm.images import VmImage, VmSetupError, build_or_reuse_image, persistent_disk
from tests.vm.vmboot import BootResult, boot

# Building the image uncached takes minutes; the first test to ask for it pays.
pytestmark = [pytest.mark.vm, pytest.mark.timeout(1200)]

GUEST = Path(__file__).with_name("guest.py")
GUEST_PYTHON = "/opt/dropkit/venv/bin/python"
RESTART_LIMIT_S = 5.0


@dataclass(frozen=True)
class GuestRun:
    boot: BootResult
    result: dict[str, Any]


def run_guest(image: VmImage, disk: Path, workdir: Path, mode: str) -> GuestRun:
    done = boot(image, f"exec {GUEST_PYTHON} guest.py {mode}\n", files=[GUEST], disk=disk,
                workdir=workdir)
    found = done.share / "result.json"
    if done.timed_out or not found.exists():
        pytest.fail(f"{mode}: {'timed out' if done.timed_out else 'no result.json'}; script "
                    f"output:\n{done.output[-3000:]}\nconsole:\n{done.console[-3000:]}",
                    pytrace=False)
    print(f"\n{mode}: VM ran {done.seconds:.0f} s; console in {workdir / 'console.log'}")
    return GuestRun(done, json.loads(found.read_text()))


@pytest.fixture(scope="module")
def image() -> VmImage:
    try:
        return build_or_reuse_image()
    except VmSetupError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def disk(image: VmImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return persistent_disk(image, tmp_path_factory.mktemp("kit") / "kit.qcow2")


@pytest.fixture(scope="module")
def first_boot(image: VmImage, disk: Path,
               tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    return run_guest(image, disk, tmp_path_factory.mktemp("first-boot"), "first-boot")


@pytest.fixture(scope="module")
def second_boot(image: VmImage, disk: Path, first_boot: GuestRun,
                tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    return run_guest(image, disk, tmp_path_factory.mktemp("second-boot"), "second-boot")


def test_agent_reaches_ready_unattended(first_boot: GuestRun) -> None:
    timings = first_boot.result["timings"]
    print(f"kernel start to READY {timings['kernel_to_ready_s']:.1f} s (userspace from "
          f"{timings['kernel_to_userspace_s']:.1f} s; agent start to READY "
          f"{timings['agent_start_to_ready_s']:.1f} s)")
    assert timings["restarts_before_ready"] == 0
    assert timings["firstboot"]["Result"] == "success"
    assert "Started dropkit-agent.service" in first_boot.boot.console
    assert first_boot.boot.returncode == 0, first_boot.boot.output


def test_health_answers_inside_the_vm(first_boot: GuestRun) -> None:
    health = first_boot.result["health"]
    assert health["http_status"] == 200
    assert health["kit_id"] == first_boot.result["identity"]["kit_id"]
    assert health["simulated"] is False
    print(f"health inside the VM: {health['status']}, degraded {health['degraded']}")
    # The VM has no GPIO chip for the panel the image's config names; nothing else may fail.
    assert set(health["degraded"]) <= {"panel"}, health["degraded"]
    assert all(part["state"] == "running" for name, part in health["parts"].items()
               if name != "panel"), health["parts"]


def test_systemd_restarts_the_agent_after_kill_9(first_boot: GuestRun) -> None:
    restart = first_boot.result["kill_9"]
    print(f"kill -9: new process after {restart['new_process_s']:.2f} s, READY again after "
          f"{restart['ready_again_s']:.2f} s")
    assert restart["restarts"] == 1
    assert restart["new_process_s"] < RESTART_LIMIT_S
    assert restart["health_after"]["http_status"] == 200


def test_kernel_devices_are_there_for_the_agent(first_boot: GuestRun) -> None:
    devices = first_boot.result["devices"]
    nodes = devices["nodes"]
    assert devices["uinput"]
    assert nodes["i2c"]["path"] == f"/dev/i2c-{devices['i2c_stub_bus']}"
    assert (nodes["i2c"]["group"], nodes["i2c"]["mode"]) == ("i2c", "0o660")
    assert nodes["gpiochip"]["group"] == "gpio"
    assert nodes["scanner"], "no /dev/dropkit/scanner for a device named like a scanner"
    sandbox = devices["sandbox"]
    opened = sandbox["open"]
    assert [opened[nodes[name]["path"]] for name in ("i2c", "gpiochip", "scanner")] == ["ok"] * 3
    # World-writable, but not a device the agent uses: its device policy refuses it.
    assert opened["/dev/net/tun"] == "EPERM"


def test_the_pi_gen_stage_made_the_image(first_boot: GuestRun) -> None:
    """The image's kit came from the dropkit pi-gen stage's own scripts, Pi settings included."""
    assert "dtparam=i2c_arm=on" in first_boot.result["pi_config"]


def test_units_pass_systemd_analyze_verify(first_boot: GuestRun) -> None:
    verify = first_boot.result["verify"]
    assert (verify["returncode"], verify["output"]) == (0, "")


def test_agent_sandbox_exposure_is_ok_or_better(first_boot: GuestRun) -> None:
    scores = {unit: (found["score"], found["band"])
              for unit, found in first_boot.result["security"].items()}
    print("systemd-analyze security:", scores)
    assert scores["dropkit-agent.service"][1] in {"PERFECT", "SAFE", "OK"}
    assert scores["dropkit-portal.service"][1] in {"PERFECT", "SAFE", "OK"}


def test_captive_portal_redirects_to_the_staff_page(first_boot: GuestRun) -> None:
    assert first_boot.result["portal"] == {"status": 302, "location": "http://10.42.0.1:8080/"}


def test_access_point_profile_loads_in_network_manager(first_boot: GuestRun) -> None:
    identity = first_boot.result["identity"]
    assert first_boot.result["access_point"] == {
        "802-11-wireless.ssid": identity["ssid"], "802-11-wireless.mode": "ap",
        "802-11-wireless-security.psk": identity["passphrase"], "ipv4.method": "shared",
        "ipv4.addresses": "10.42.0.1/24"}


def test_first_boot_shows_the_kit_id_and_secrets_on_the_console(first_boot: GuestRun) -> None:
    identity = first_boot.result["identity"]
    console = first_boot.boot.console
    assert "DROP KIT SETUP" in console
    for value in (identity["kit_id"], identity["ssid"], identity["passphrase"],
                  identity["staff_token"], "no printer found"):
        assert value in console


def test_second_boot_keeps_the_kit_id_and_secrets(first_boot: GuestRun,
                                                  second_boot: GuestRun) -> None:
    assert second_boot.result["identity"] == first_boot.result["identity"]
    assert second_boot.result["health"]["kit_id"] == first_boot.result["identity"]["kit_id"]
    firstboot = second_boot.result["timings"]["firstboot"]
    assert firstboot["ConditionResult"] == "no"
    assert "DROP KIT SETUP" not in second_boot.boot.console
    print(f"second boot: kernel start to READY "
          f"{second_boot.result['timings']['kernel_to_ready_s']:.1f} s")


def test_watchdog_restarts_a_hung_agent(second_boot: GuestRun) -> None:
    restart = second_boot.result["hung_loop"]
    print(f"hung agent: new process after {restart['new_process_s']:.1f} s, READY again after "
          f"{restart['ready_again_s']:.1f} s")
    assert restart["restarts"] == 1
    assert "watchdog timeout" in restart["journal"].lower()
    assert restart["health_after"]["http_status"] == 200


def test_agent_user_powers_the_kit_off(second_boot: GuestRun) -> None:
    """``systemctl poweroff`` from the agent's user, in its sandbox, ends the VM."""
    poweroff = second_boot.result["poweroff"]
    assert poweroff == {"requested": True}, poweroff
    assert second_boot.boot.returncode is None  # the script never got to finish
    assert "runner powering off" not in second_boot.boot.console
    assert "reboot: Power down" in second_boot.boot.console
