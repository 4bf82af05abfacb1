"""Shared fixtures: a real dropkit daemon in a subprocess, on a free loopback port."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

URL_LINE = re.compile(r"is open at (http://\S+)")
TOKEN_LINE = re.compile(r"staff token (\S+);")


def new_order_id() -> str:
    return str(uuid.uuid4())


def write_manifest(path: Path, items: list[tuple[str, str, int, int]],
                   version: str = "test-1") -> Path:
    lines = [f'version = "{version}"']
    for sku, name, price, qty in items:
        lines += ["[[items]]", f'sku = "{sku}"', f'name = "{name}"', f"price_cents = {price}",
                  f"qty = {qty}"]
    path.write_text("\n".join(lines) + "\n")
    return path


class Kit:
    """A ``dropkit sim`` process with its state directory, started and stopped by the test."""

    def __init__(self, state_dir: Path, config: Path | None = None) -> None:
        self.state_dir, self.config = state_dir, config
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.token = ""
        self.log: list[str] = []

    def start(self, timeout: float = 20) -> Kit:
        args = [sys.executable, "-m", "agent", "sim", "--state-dir", str(self.state_dir),
                "--http-port", "0"]
        if self.config is not None:
            args += ["--config", str(self.config)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("dropkit sim exited early:\n" + "".join(self.log))
            self.log.append(line)
            if match := URL_LINE.search(line):
                self.url = match.group(1).rstrip("/")
            if match := TOKEN_LINE.search(line):
                self.token = match.group(1)
                # Keep reading its output so the pipe never fills and blocks the daemon.
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        raise RuntimeError("dropkit sim did not start in time:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    @property
    def staff(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def order(self, client: httpx.Client, lines: list[dict[str, Any]],
              order_id: str | None = None, method: str = "cash") -> httpx.Response:
        return client.post("/api/orders", json={"order_id": order_id or new_order_id(),
                                                "lines": lines, "payment": {"method": method}})


@pytest.fixture
def kit_factory(tmp_path: Path) -> Iterator[Any]:
    kits: list[Kit] = []

    def make(state_dir: Path | None = None, config: Path | None = None) -> Kit:
        kit = Kit(state_dir or tmp_path / f"state{len(kits)}", config)
        kits.append(kit)
        return kit.start()

    yield make
    for kit in kits:
        kit.kill()


@pytest.fixture
def kit(kit_factory: Any) -> Kit:
    """A running ``dropkit sim`` on the demo manifest."""
    return kit_factory()
