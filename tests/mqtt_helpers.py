"""Real Mosquitto brokers and HQ processes for the uplink tests, on free loopback ports."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, message: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s: {message}")


class Broker:
    """A mosquitto the test owns: started, SIGKILLed, stopped and restarted on one port."""

    def __init__(self, workdir: Path, persistence: bool = False) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        # "user root": as root, mosquitto would otherwise drop to its own user and could not
        # write its log and persistence file in the test's directory.
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "user root",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {workdir}/", "autosave_interval 1",
                 "max_queued_messages 100000", "log_type error", "log_type warning",
                 f"log_dest file {workdir}/mosquitto.log"]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False
        wait_for(listening, 10, "mosquitto listening")
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Hq:
    """``dropkit hq`` in a subprocess, its output kept for the test to read."""

    def __init__(self, broker: Broker, db: Path, stock: Path | None = None) -> None:
        self.broker, self.db, self.stock = broker, db, stock
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self.extra_args: list[str] = []

    def start(self) -> Hq:
        args = [sys.executable, "-m", "agent", "hq", "--broker", self.broker.url,
                "--db", str(self.db), *self.extra_args]
        if self.stock:
            args += ["--stock", str(self.stock)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: any("HQ connected" in line for line in self.log), 15, "HQ connected")
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def query(self, sql: str, *args: Any) -> list[tuple]:
        import sqlite3

        db = sqlite3.connect(self.db, timeout=30)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()


class Listener:
    """A paho subscriber that collects (topic, payload, retained) for the test to inspect."""

    def __init__(self, broker: Broker, *topics: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: queue.Queue[tuple[str, bytes, bool, float]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, m.payload, bool(m.retain), time.monotonic()))
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.subscribe([(topic, 1) for topic in topics])
        self.client.loop_start()
        assert subscribed.wait(10)

    def next(self, topic_suffix: str, timeout: float = 10) -> tuple[str, bytes, bool, float]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no message on *{topic_suffix} within {timeout} s")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if message[0].endswith(topic_suffix):
                return message

    def json(self, topic_suffix: str, timeout: float = 10) -> dict[str, Any]:
        return json.loads(self.next(topic_suffix, timeout)[1])

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def kit_config(path: Path, broker: Broker, manifest: Path, **mqtt: Any) -> Path:
    settings = {"url": broker.url, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0,
                "telemetry_interval_s": 1.0, "reconcile_check_s": 0.5, **mqtt}
    lines = ['[kit]', 'id = "kit-test"', '[orders]', f'manifest = "{manifest}"', '[mqtt]']
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path
