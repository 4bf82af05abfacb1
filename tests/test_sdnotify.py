"""The daemon speaks systemd's notify protocol: READY once serving, watchdog pings, STOPPING."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx

from tests.conftest import Kit


def test_ready_watchdog_and_stopping_reach_the_notify_socket(tmp_path: Path,
                                                             monkeypatch) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    kit = Kit(tmp_path / "state").start()
    try:
        ready = sock.recv(4096).decode()
        assert ready.startswith("READY=1\nSTATUS=serving http://127.0.0.1:")
        # READY comes only once HTTP answers.
        assert httpx.get(kit.url + "/api/health").status_code == 200
        started = time.monotonic()
        pings = [sock.recv(4096) for _ in range(5)]
        assert set(pings) == {b"WATCHDOG=1"}
        assert time.monotonic() - started < 2
        assert kit.stop() == 0
        messages = []
        while (message := sock.recv(4096)) != b"STOPPING=1":
            messages.append(message)
        assert set(messages) <= {b"WATCHDOG=1"}
    finally:
        kit.kill()
        sock.close()
        os.unlink(address)
