"""Inside the VM test image: the boot test's checks, and helpers for more in-VM checks.

The host puts this file on the 9p share and runs it with the kit's own interpreter
(``/opt/dropkit/venv/bin/python guest.py first-boot|second-boot|ready``) as root; it writes
what it found to ``result.json`` beside itself for ``test_vm_boot.py`` (``ready``: for
``test_arm64.py``) and prints the figures to the console. Other in-VM checks can import the
helpers: the agent's unit state, a command run in the agent's own sandbox, and the kernel's
simulated devices (i2c-stub, uinput, gpio-sim).
"""

from __future__ import annotations

import configparser
import grp
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

AGENT = "dropkit-agent.service"
FIRSTBOOT = "dropkit-firstboot.service"
UNIT_DIR = Path("/etc/systemd/system")
SHIPPED_UNITS = ("dropkit-agent.service", "dropkit-firstboot.service", "dropkit-portal.socket",
                 "dropkit-portal.service")
CONFIG = Path("/etc/dropkit/agent.toml")
STAFF_TOKEN = Path("/etc/dropkit/staff-token")
# The pi-gen stage's Pi settings (a Debian root has no firmware partition: the image build makes
# this file for the stage to fill).
PI_CONFIG = Path("/boot/firmware/config.txt")
AP_PROFILE = Path("/etc/NetworkManager/system-connections/dropkit-ap.nmconnection")
HEALTH_URL_HOST, HEALTH_PORT = "127.0.0.1", 8080
RESULT = Path(__file__).with_name("result.json")
# [Service] settings that say how the agent runs, not what it may touch: left out of a sandbox.
RUN_CONTROL = {"Type", "NotifyAccess", "ExecStart", "WatchdogSec", "Restart", "RestartSec",
               "TimeoutStartSec", "TimeoutStopSec"}
# Opens each path read-write and says what happened; run as the agent, in its sandbox.
OPEN_PROBE = """
import errno, json, os, sys
outcome = {}
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDWR | os.O_NONBLOCK))
        outcome[path] = "ok"
    except OSError as exc:
        outcome[path] = errno.errorcode[exc.errno]
print(json.dumps({"uid": os.getuid(), "groups": sorted(os.getgroups()), "open": outcome}))
"""


def console(message: str) -> None:
    """A line on the serial console, where the boot test's log is."""
    with open("/dev/console", "w") as out:
        out.write(f"VMTEST: {message}\n")


def run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check)


def unit_properties(unit: str, *names: str) -> dict[str, str]:
    shown = run("systemctl", "show", unit, *(f"--property={name}" for name in names)).stdout
    return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)


def seconds(monotonic_usec: str) -> float:
    """A systemd ``...TimestampMonotonic`` (µs of CLOCK_MONOTONIC, 0 at kernel start) in s."""
    return int(monotonic_usec) / 1e6


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition``; gently, since every poll costs the emulated CPUs the agent needs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout:.0f} s")
        time.sleep(0.25)


def agent_ready() -> bool:
    """READY: a Type=notify unit is active/running only once the daemon sent READY=1."""
    state = unit_properties(AGENT, "ActiveState", "SubState")
    return (state["ActiveState"], state["SubState"]) == ("active", "running")


def dropkit_journal(lines: int = 80) -> str:
    return run("journalctl", "-b", "--unit=dropkit-*", f"--lines={lines}", "--no-pager",
               check=False).stdout


def agent_health() -> dict[str, Any]:
    connection = http.client.HTTPConnection(HEALTH_URL_HOST, HEALTH_PORT, timeout=30)
    try:
        connection.request("GET", "/api/health")
        response = connection.getresponse()
        return {**json.loads(response.read()), "http_status": response.status}
    finally:
        connection.close()


def sandbox_properties() -> list[str]:
    """``--property`` arguments with the agent unit's user, groups and sandbox."""
    properties, section = [], ""
    for raw in (UNIT_DIR / AGENT).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and line.split("=", 1)[0] not in RUN_CONTROL:
            properties.append(f"--property={line}")
    return properties


def run_in_agent_sandbox(*command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``command`` as the agent's user under the agent unit's sandbox (a transient unit)."""
    return subprocess.run(["systemd-run", "--quiet", "--wait", "--pipe", "--collect",
                           *sandbox_properties(), *command],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def settle() -> None:
    run("udevadm", "settle", "--timeout=30")


def load_i2c_stub(addresses: tuple[int, ...] = (0x40, 0x36)) -> int:
    """Load i2c-stub with chips at ``addresses``; its bus number (``/dev/i2c-N``)."""
    run("modprobe", "i2c-stub", "chip_addr=" + ",".join(hex(address) for address in addresses))
    for name in Path("/sys/bus/i2c/devices").glob("i2c-*/name"):
        if "stub" in name.read_text().lower():
            return int(name.parent.name.removeprefix("i2c-"))
    raise RuntimeError("i2c-stub loaded but no stub adapter under /sys/bus/i2c/devices")


def make_gpio_sim_chip(name: str = "vmchip", lines: int = 8) -> Path:
    """A live gpio-sim chip with ``lines`` lines; its character device. A chip of that name
    made earlier in this boot is taken as it is (a live bank's lines cannot be changed)."""
    run("modprobe", "gpio-sim")
    chip = Path("/sys/kernel/config/gpio-sim") / name
    if (chip / "live").exists() and (chip / "live").read_text().strip() == "1":
        return Path("/dev") / (chip / "bank0" / "chip_name").read_text().strip()
    (chip / "bank0").mkdir(parents=True, exist_ok=True)
    (chip / "bank0" / "num_lines").write_text(str(lines))
    (chip / "live").write_text("1")
    return Path("/dev") / (chip / "bank0" / "chip_name").read_text().strip()


def node(path: Path) -> dict[str, Any]:
    status = path.stat()
    return {"path": str(path), "group": grp.getgrgid(status.st_gid).gr_name,
            "mode": oct(status.st_mode & 0o777)}


def identity() -> dict[str, str]:
    """The kit id and the secrets the first boot made."""
    profile = configparser.ConfigParser(interpolation=None)
    profile.read_string(AP_PROFILE.read_text())
    return {"kit_id": tomllib.loads(CONFIG.read_text())["kit"]["id"],
            "staff_token": STAFF_TOKEN.read_text().strip(),
            "ssid": profile["wifi"]["ssid"], "passphrase": profile["wifi-security"]["psk"],
            "machine_id": Path("/etc/machine-id").read_text().strip()}


def failed_starts() -> list[str]:
    """Why each earlier start of the agent in this boot ended: "timeout" (TimeoutStartSec, an
    emulator too slow for it), or a failure ("exit-code", "signal", "watchdog", "core-dump")."""
    journal = run("journalctl", "-b", "-u", AGENT, "--no-pager", "-o", "cat", check=False).stdout
    return re.findall(r"Failed with result '([\w-]+)'", journal)


def boot_timings() -> dict[str, Any]:
    # Blocks, without polling, until the boot's own start jobs (the agent's among them) are done.
    run("systemctl", "is-system-running", "--wait", check=False)
    try:
        wait_until(agent_ready, 240, f"READY from {AGENT}")
    except TimeoutError as exc:
        raise RuntimeError(f"{exc}; the dropkit units' journal:\n{dropkit_journal()}") from None
    agent = unit_properties(AGENT, "ActiveEnterTimestampMonotonic",
                            "ExecMainStartTimestampMonotonic", "NRestarts")
    firstboot = unit_properties(FIRSTBOOT, "ConditionResult", "Result",
                                "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic")
    userspace = run("systemctl", "show", "--property=UserspaceTimestampMonotonic").stdout
    timings = {
        "kernel_to_ready_s": seconds(agent["ActiveEnterTimestampMonotonic"]),
        "kernel_to_userspace_s": seconds(userspace.split("=", 1)[1]),
        "agent_start_to_ready_s": seconds(agent["ActiveEnterTimestampMonotonic"])
        - seconds(agent["ExecMainStartTimestampMonotonic"]),
        "restarts_before_ready": int(agent["NRestarts"]),
        "failed_starts": failed_starts(),
        "firstboot": firstboot,
    }
    console(f"{AGENT} READY {timings['kernel_to_ready_s']:.1f} s after kernel start "
            f"(agent process start to READY {timings['agent_start_to_ready_s']:.1f} s)")
    return timings


def restart_after(action: Callable[[int], None], timeout: float) -> dict[str, Any]:
    """Do ``action`` to the agent's main PID; how long until a new process, and READY again."""
    before = unit_properties(AGENT, "MainPID", "NRestarts")
    old_pid = int(before["MainPID"])
    started = time.monotonic()
    action(old_pid)

    def back() -> bool:
        now = unit_properties(AGENT, "MainPID", "ActiveEnterTimestampMonotonic")
        return (int(now["MainPID"]) not in (0, old_pid)
                and seconds(now["ActiveEnterTimestampMonotonic"]) > started and agent_ready())

    wait_until(back, timeout, f"restart of {AGENT}")
    after = unit_properties(AGENT, "ExecMainStartTimestampMonotonic",
                            "ActiveEnterTimestampMonotonic", "NRestarts")
    return {"new_process_s": seconds(after["ExecMainStartTimestampMonotonic"]) - started,
            "ready_again_s": seconds(after["ActiveEnterTimestampMonotonic"]) - started,
            "restarts": int(after["NRestarts"]) - int(before["NRestarts"]),
            "health_after": agent_health()}


def kill_9() -> dict[str, Any]:
    restart = restart_after(lambda pid: os.kill(pid, signal.SIGKILL), 60)
    console(f"kill -9: new agent process after {restart['new_process_s']:.2f} s, "
            f"READY again after {restart['ready_again_s']:.2f} s")
    return restart


def hung_loop() -> dict[str, Any]:
    """A stopped process sends no watchdog pings, like an event loop that hangs."""
    restart = restart_after(lambda pid: os.kill(pid, signal.SIGSTOP), 90)
    restart["journal"] = run("journalctl", "-b", "-u", AGENT, "--grep", "[Ww]atchdog",
                             "--no-pager", check=False).stdout
    console(f"hung agent (SIGSTOP): new process after {restart['new_process_s']:.1f} s, "
            f"READY again after {restart['ready_again_s']:.1f} s")
    return restart


def devices() -> dict[str, Any]:
    """The kernel's simulated devices, their nodes, and what the agent's sandbox may open."""
    from evdev import UInput, ecodes

    run("modprobe", "uinput")
    bus = load_i2c_stub()
    chip = make_gpio_sim_chip()
    keys = [*range(ecodes.KEY_1, ecodes.KEY_0 + 1), ecodes.KEY_ENTER]
    with UInput({ecodes.EV_KEY: keys}, name="vmtest Barcode Scanner"):
        settle()
        scanner_link = Path("/dev/dropkit/scanner")
        scanner = scanner_link.resolve() if scanner_link.exists() else None
        nodes = {"i2c": node(Path(f"/dev/i2c-{bus}")), "gpiochip": node(chip),
                 "scanner": node(scanner) if scanner else None}
        # /dev/net/tun is mode 0666: only the agent's device policy keeps it out.
        probe = run_in_agent_sandbox(sys.executable, "-c", OPEN_PROBE, f"/dev/i2c-{bus}",
                                     str(chip), str(scanner or scanner_link), "/dev/net/tun")
    return {"i2c_stub_bus": bus, "uinput": Path("/dev/uinput").exists(), "nodes": nodes,
            "sandbox": json.loads(probe.stdout) if probe.returncode == 0 else probe.stderr}


def security() -> dict[str, Any]:
    scores = {}
    for unit in ("dropkit-agent.service", "dropkit-portal.service", "dropkit-firstboot.service"):
        text = run("systemd-analyze", "security", "--no-pager", unit, check=False).stdout
        overall = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", text)
        scores[unit] = {"score": float(overall[1]) if overall else None,
                        "band": overall[2] if overall else None, "report": text}
    agent = scores["dropkit-agent.service"]
    console(f"systemd-analyze security {AGENT}: {agent['score']} {agent['band']}")
    return scores


def verify() -> dict[str, Any]:
    done = run("systemd-analyze", "verify", *(str(UNIT_DIR / unit) for unit in SHIPPED_UNITS),
               check=False)
    return {"returncode": done.returncode, "output": done.stdout + done.stderr}


def portal() -> dict[str, Any]:
    """A phone's connectivity probe, as it arrives once the kit's DNS sent it here."""
    connection = http.client.HTTPConnection("127.0.0.1", 80, timeout=60)
    try:
        connection.request("GET", "/generate_204",
                           headers={"Host": "connectivitycheck.gstatic.com"})
        response = connection.getresponse()
        return {"status": response.status, "location": response.getheader("Location")}
    finally:
        connection.close()


def access_point() -> dict[str, Any]:
    """The access point as NetworkManager loaded it."""
    fields = ("802-11-wireless.ssid", "802-11-wireless.mode", "802-11-wireless-security.psk",
              "ipv4.method", "ipv4.addresses")
    done = run("nmcli", "--show-secrets", "--get-values", ",".join(fields), "connection", "show",
               "dropkit-ap", check=False)
    if done.returncode != 0:
        return {"error": done.stderr}
    return dict(zip(fields, done.stdout.splitlines(), strict=False))


def save(result: dict[str, Any], path: Path = RESULT) -> None:
    """``result`` as JSON on the share, on the host's disk before this returns."""
    with path.open("w") as out:
        json.dump(result, out, indent=2)
        out.flush()
        os.fsync(out.fileno())


def first_boot() -> int:
    result = {"timings": boot_timings(), "health": agent_health(), "identity": identity()}
    result["kill_9"] = kill_9()
    result.update(devices=devices(), security=security(), verify=verify(), portal=portal(),
                  access_point=access_point(), pi_config=PI_CONFIG.read_text().splitlines())
    save(result)
    return 0


def ready() -> int:
    """The boot to READY and the health inside the VM, with where the boot's time went."""
    result = {"timings": boot_timings(), "health": agent_health(), "identity": identity(),
              "machine": os.uname().machine, "pi_config": PI_CONFIG.read_text().splitlines(),
              "systemd_analyze": run("systemd-analyze", "time", check=False).stdout,
              "critical_chain": run("systemd-analyze", "critical-chain", "--no-pager", AGENT,
                                    check=False).stdout}
    save(result)
    return 0


def second_boot() -> int:
    result = {"timings": boot_timings(), "health": agent_health(), "identity": identity()}
    result["hung_loop"] = hung_loop()
    console("powering off as the agent's user, in its sandbox (systemctl poweroff)")
    result["poweroff"] = {"requested": True}
    save(result)
    done = run_in_agent_sandbox("systemctl", "poweroff")
    # On success the VM goes down around this process; still here means it did not.
    time.sleep(120 if done.returncode == 0 else 0)
    result["poweroff"].update(returncode=done.returncode, output=done.stdout + done.stderr)
    save(result)
    return 1


if __name__ == "__main__":
    sys.exit({"first-boot": first_boot, "second-boot": second_boot,
              "ready": ready}[sys.argv[1]]())
