"""The read-only NUT server (agent/power/nut.py): upsd's protocol as NUT's own client reads
it (Debian's nut-client ``upsc``) against a ``dropkit sim``, and the protocol's edges and
bounds on a real socket.

The oracle for the replies is NUT's docs/net-protocol.txt and upsd's server sources
(netuser.c, netmisc.c): LOGOUT answers "OK Goodbye", USERNAME/PASSWORD "OK", LOGIN without
upsmon rights "ERR ACCESS-DENIED", and so on.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.config import NutConfig
from agent.ops.harness import free_port, wait_for, write_config
from agent.power.nut import MAX_LINE_BYTES, NutServer
from tests import needs

UPSC = shutil.which("upsc")
POWER = {"ts": "2026-01-01T00:00:00Z", "seq": 3, "state": "OL CHRG", "feeding": "mains",
         "sources": {"mains": {"present": True, "volts": 5.1, "amps": 0.9, "watts": 4.6},
                     "battery": {"present": True, "volts": 3.9, "amps": -0.2, "watts": 0.8}},
         "ups": {"percent": 87.4, "volts": 3.9, "rate_percent_per_hour": 4.0,
                 "minutes_left": None},
         "sensor_faults": [], "shutdown_in_s": None}


def upsc(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    assert UPSC is not None
    return subprocess.run([UPSC, f"kit@127.0.0.1:{port}", *args], capture_output=True,
                          text=True, timeout=10)


def upsc_vars(port: int) -> dict[str, str]:
    answer = upsc(port)
    assert answer.returncode == 0, answer.stderr
    return dict(line.split(": ", 1) for line in answer.stdout.splitlines() if ": " in line)


def test_upsc_lists_the_kit_and_follows_a_mains_loss(kit_factory: Any, tmp_path: Path) -> None:
    if UPSC is None:
        needs.missing("upsc", "nut-client")
    port = free_port()
    kit = kit_factory(config=write_config(tmp_path / "agent.toml", {
        "kit": {"id": "kit-nut", "name": "Stall 4"},
        "nut": {"enabled": True, "port": port}}))

    def health_power() -> dict[str, Any]:
        return httpx.get(kit.url + "/api/health", timeout=10).json()["power"]

    wait_for(lambda: health_power()["state"].startswith("OL"), 10, "on line at start")
    # The simulated gauge powers up reset (RI): its charge is believed once it has repeated
    # for gauge_confirm_s, and until then NUT is not told one.
    wait_for(lambda: health_power()["ups"]["percent"] is not None, 15, "a charge reading")
    listed = subprocess.run([UPSC, "-l", f"127.0.0.1:{port}"], capture_output=True,
                            text=True, timeout=10)
    assert listed.stdout.split() == ["kit"], listed
    seen = upsc_vars(port)
    assert seen["ups.status"].startswith("OL")
    assert seen["device.serial"] == "kit-nut" and seen["driver.name"] == "dropkit"
    assert 0 <= int(seen["battery.charge"]) <= 100
    assert float(seen["input.voltage"]) == pytest.approx(health_power()["sources"]["mains"]
                                                         ["volts"], abs=0.01)
    assert {"battery.voltage", "battery.current", "device.model", "ups.mfr"} <= set(seen)
    assert upsc(port, "ups.status").stdout.strip().startswith("OL")
    with httpx.Client(base_url=kit.url, timeout=30) as client:
        pulled = client.post("/api/staff/sim/power", json={"action": "pull_mains"},
                             headers=kit.staff)
        assert pulled.status_code == 200, pulled.text
        started = time.monotonic()
        wait_for(lambda: health_power()["state"].startswith("OB"), 5, "on battery")
        # The NUT server reads the same snapshot as /api/health: no later than the next look.
        assert upsc(port, "ups.status").stdout.split()[0] == "OB"
        took = time.monotonic() - started
        assert took < 1.5, f"upsc saw OB {took:.3f} s after the pull"
        client.post("/api/staff/sim/power", json={"action": "restore_mains"},
                    headers=kit.staff)
        wait_for(lambda: upsc(port, "ups.status").stdout.startswith("OL"), 5,
                 "upsc sees the mains back")
    missing = upsc(port, "output.voltage")   # not measured: not claimed
    assert missing.returncode != 0 and "not supported" in missing.stderr.lower()


# -- the protocol on a socket ---------------------------------------------------------------

class Conversation:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.file = self.sock.makefile("rwb")

    def ask(self, line: str | bytes) -> list[str]:
        """The reply: one line, or a list from BEGIN to END."""
        self.file.write(line if isinstance(line, bytes) else line.encode() + b"\n")
        self.file.flush()
        reply = [self.file.readline().decode().rstrip("\n")]
        while reply[0].startswith("BEGIN ") and not reply[-1].startswith("END "):
            reply.append(self.file.readline().decode().rstrip("\n"))
        return reply

    def closed(self) -> bool:
        return self.file.readline() == b""


async def serving(config: NutConfig, power: dict[str, Any]) -> tuple[NutServer, asyncio.Task]:
    server = NutServer(config, lambda: power, description='Stall "4"',
                       fixed={"driver.name": "dropkit"}, version_line="dropkit test")
    task = asyncio.create_task(server.run())
    while server.port is None:
        await asyncio.sleep(0.01)
    return server, task


def run_with_server(config: NutConfig, power: dict[str, Any], talk: Any) -> None:
    async def main() -> None:
        server, task = await serving(config, power)
        try:
            assert server.port is not None
            await asyncio.to_thread(talk, server.port)
        finally:
            task.cancel()

    asyncio.run(main())


def test_the_protocol_answers_as_upsd_does_for_a_read_only_server() -> None:
    def talk(port: int) -> None:
        nut = Conversation(port)
        assert nut.ask("LIST UPS") == ["BEGIN LIST UPS", 'UPS kit "Stall \\"4\\""',
                                          "END LIST UPS"]
        assert nut.ask("GET VAR kit ups.status") == ['VAR kit ups.status "OL CHRG"']
        assert nut.ask('GET VAR kit "battery.charge"') == ['VAR kit battery.charge "87"']
        assert nut.ask("GET VAR kit battery.runtime") == ["ERR VAR-NOT-SUPPORTED"]  # charging
        assert nut.ask("GET VAR ups2 ups.status") == ["ERR UNKNOWN-UPS"]
        assert nut.ask("GET VAR kit") == ["ERR INVALID-ARGUMENT"]
        assert nut.ask("LIST RW kit") == ["BEGIN LIST RW kit", "END LIST RW kit"]
        assert nut.ask("LOGIN kit") == ["ERR USERNAME-REQUIRED"]
        assert nut.ask("USERNAME monuser") == ["OK"]
        assert nut.ask("USERNAME other") == ["ERR ALREADY-SET-USERNAME"]
        assert nut.ask("LOGIN kit") == ["ERR PASSWORD-REQUIRED"]
        assert nut.ask("PASSWORD secret") == ["OK"]
        assert nut.ask("LOGIN kit") == ["ERR ACCESS-DENIED"]
        assert nut.ask("SET VAR kit ups.delay.shutdown 1") == ["ERR ACCESS-DENIED"]
        assert nut.ask("FSD kit") == ["ERR ACCESS-DENIED"]
        assert nut.ask("HELP")[0].startswith("Commands: HELP VER")
        assert nut.ask("VER") == ["dropkit test"]
        assert nut.ask("PROTVER") == ["1.3"]
        assert nut.ask("STARTTLS") == ["ERR FEATURE-NOT-CONFIGURED"]
        assert nut.ask("REQ STATUS") == ["ERR UNKNOWN-COMMAND"]
        assert nut.ask(b"\xff\xfe GET\n") == ["ERR UNKNOWN-COMMAND"]
        assert nut.ask("LIST VAR kit") == [
            "BEGIN LIST VAR kit", 'VAR kit battery.charge "87"',
            'VAR kit battery.current "-0.2"', 'VAR kit battery.voltage "3.9"',
            'VAR kit driver.name "dropkit"', 'VAR kit input.voltage "5.1"',
            'VAR kit ups.status "OL CHRG"', "END LIST VAR kit"]
        assert nut.ask("LOGOUT") == ["OK Goodbye"] and nut.closed()

    run_with_server(NutConfig(enabled=True, port=0), POWER, talk)


def test_nothing_known_is_data_stale() -> None:
    def talk(port: int) -> None:
        nut = Conversation(port)
        assert nut.ask("GET VAR kit ups.status") == ["ERR DATA-STALE"]
        assert nut.ask("LIST VAR kit") == ["ERR DATA-STALE"]

    run_with_server(NutConfig(enabled=True, port=0), {"state": "unknown"}, talk)


def test_connections_lines_and_silence_are_bounded() -> None:
    def talk(port: int) -> None:
        first, second = Conversation(port), Conversation(port)
        assert first.ask("PROTVER") == ["1.3"] and second.ask("PROTVER") == ["1.3"]
        third = Conversation(port)          # past max_connections: closed at once
        assert third.closed()
        assert first.ask(b"GET " + b"x" * (MAX_LINE_BYTES * 2) + b"\n") == [
            "ERR INVALID-ARGUMENT"]
        assert first.closed()
        started = time.monotonic()
        assert second.closed()              # silent past idle_timeout_s (1 s)
        assert 0.5 < time.monotonic() - started < 4
        fourth = Conversation(port)         # the places were given back
        assert fourth.ask("PROTVER") == ["1.3"]

    run_with_server(NutConfig(enabled=True, port=0, max_connections=2, idle_timeout_s=1.0),
                    POWER, talk)
