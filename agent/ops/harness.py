"""The kit's processes for real, on loopback: ``dropkit sim``, Mosquitto and ``dropkit hq``.

``dropkit drill`` runs its scenarios on these, and the tests build on the same pieces: each
process on a free loopback port with its files in a directory the caller owns, started and
stopped (or ``kill -9``-ed) at will. :class:`SimKit` talks to the kit only through its HTTP API,
as a tablet or the staff page would. Everything here is stdlib, so a drill needs nothing the
daemon does not.

    >>> import tempfile
    >>> path = write_config(Path(tempfile.mkdtemp()) / "agent.toml",
    ...                     {"kit": {"id": "kit-x"}, "power": {"shutdown_delay_s": 1.5}})
    >>> print(path.read_text(), end="")
    [kit]
    id = "kit-x"
    [power]
    shutdown_delay_s = 1.5
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

URL_LINE = re.compile(r"is open at (http://\S+)")
TOKEN_LINE = re.compile(r"staff token (\S+);")


def new_order_id() -> str:
    return str(uuid.uuid4())


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class WaitTimeout(TimeoutError, AssertionError):
    """:func:`wait_for` ran out of time; an AssertionError too, so a test reads it as a failed
    expectation."""


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.05) -> T | None:
    """The first true value of ``predicate()`` within ``timeout`` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def wait_for(predicate: Callable[[], T], timeout: float, message: str,
             interval: float = 0.05) -> T:
    """:func:`poll`, raising :class:`WaitTimeout` naming ``message`` when the time is up."""
    value = poll(predicate, timeout, interval)
    if value is None:
        raise WaitTimeout(f"timed out after {timeout} s: {message}")
    return value


def write_manifest(path: Path, items: list[tuple[str, str, int, int]],
                   version: str = "test-1") -> Path:
    """A manifest file of ``(sku, name, price_cents, qty)`` items."""
    lines = [f'version = "{version}"']
    for sku, name, price, qty in items:
        lines += ["[[items]]", f'sku = "{sku}"', f'name = "{name}"', f"price_cents = {price}",
                  f"qty = {qty}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    """A config file of ``{section: {key: value}}`` (every config value is a scalar, and a JSON
    scalar is a TOML one)."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Answer:
    """One HTTP answer: the status and the JSON body (None when it is not JSON)."""

    status: int
    data: Any


_running: set[Child] = set()  # strong references: a child nobody holds still runs


def running_children() -> list[Child]:
    """Every child started here that still runs (a test that failed half way would leave its
    brokers and kits behind otherwise)."""
    _running.difference_update([child for child in _running if child.proc.poll() is not None])
    return list(_running)


class Child:
    """A subprocess the caller owns; ``python -m agent ...`` ones keep their output in
    :attr:`log`."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []
        self._reader: threading.Thread | None = None

    def _popen(self, args: list[str], **kwargs: Any) -> None:
        self.proc = subprocess.Popen(args, text=True, **kwargs)
        _running.add(self)

    def _spawn_agent(self, *args: str) -> None:
        self._popen([sys.executable, "-m", "agent", *args], stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    # faulthandler: a SIGABRT (see stop) prints every thread's stack first.
                    env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"})
        # Read its output all along, so the pipe never fills and blocks it.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.append(line)

    def _exited(self) -> bool:
        """True once the process has ended and all its output is in :attr:`log`."""
        if self.proc is None or self.proc.poll() is None:
            return False
        if self._reader is not None:
            self._reader.join(5)
        return True

    def kill(self) -> None:
        """``kill -9``: no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit code; :class:`WaitTimeout` with where it hung (every
        thread's stack, for ``python -m agent`` children) when it outlasts ``timeout``."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:  # not even that: no chance to clean up
                self.kill()
            self._exited()
            raise WaitTimeout(f"{self.proc.args[:4]} did not stop within {timeout} s of "
                              f"SIGTERM; its last output:\n{''.join(self.log[-60:])}") from None


class KitClient:
    """A running kit's HTTP API at :attr:`url` (with the staff :attr:`token` for the staff
    calls), as a tablet or the staff page uses it; stdlib only."""

    def __init__(self, url: str = "", token: str = "") -> None:
        self.url, self.token = url, token

    @property
    def staff(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request(self, method: str, path: str, body: Any = None, *, staff: bool = False,
                timeout: float = 30, source: str | None = None) -> Answer:
        """One request on a connection of its own (so threads may call it at once), from the
        loopback address ``source`` when given (127.0.0.2: another client than 127.0.0.1).

        Raises OSError or :class:`http.client.HTTPException` when the kit does not answer.
        """
        host, port = self.address
        connection = http.client.HTTPConnection(
            host, port, timeout=timeout, source_address=(source, 0) if source else None)
        headers = {**self.staff} if staff else {}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            connection.request(method, path, payload, headers)
            response = connection.getresponse()
            raw = response.read()
        finally:
            connection.close()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        return Answer(response.status, data)

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/api/health").data

    def place(self, lines: list[dict[str, Any]], order_id: str | None = None,
              method: str = "cash", source: str | None = None, timeout: float = 30,
              staff: bool = True) -> Answer:
        """A sale at the till (``staff``), or a customer's reservation."""
        return self.request("POST", "/api/orders", {"order_id": order_id or new_order_id(),
                                                    "lines": lines,
                                                    "payment": {"method": method}},
                            source=source, timeout=timeout, staff=staff)

    @property
    def address(self) -> tuple[str, int]:
        """Where the kit listens: ``(host, port)``."""
        parts = urlsplit(self.url)
        return parts.hostname or "127.0.0.1", parts.port or 80


class SimKit(Child, KitClient):
    """A ``dropkit sim`` process with its state directory, on a free loopback port."""

    def __init__(self, state_dir: Path, config: Path | None = None) -> None:
        Child.__init__(self)
        KitClient.__init__(self)
        self.state_dir, self.config = state_dir, config

    def start(self, timeout: float = 20) -> Self:
        """Start it and return once it serves (RuntimeError with its output if it does not)."""
        config = ["--config", str(self.config)] if self.config is not None else []
        since = len(self.log)  # started again: the earlier run's announcement is not this one's
        self._spawn_agent("sim", "--state-dir", str(self.state_dir), "--http-port", "0",
                          *config)

        def announced() -> tuple[str, str] | None:
            exited = self._exited()
            output = "".join(self.log[since:])
            url, token = URL_LINE.search(output), TOKEN_LINE.search(output)
            if url and token:
                return url.group(1).rstrip("/"), token.group(1)
            if exited:
                raise RuntimeError("dropkit sim exited early:\n" + output)
            return None

        found = poll(announced, timeout, 0.01)
        if found is None:
            raise RuntimeError("dropkit sim did not start in time:\n" + "".join(self.log[since:]))
        self.url, self.token = found
        return self

    def resident_mb(self) -> float:
        """The daemon's resident memory (VmRSS), in MB."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS line in /proc: the kit is gone")

    def limit_open_files(self, count: int) -> None:
        """Let the running daemon hold at most ``count`` file descriptors, as the unit's
        ``LimitNOFILE=`` does (``prlimit --nofile``)."""
        import resource

        assert self.proc is not None
        resource.prlimit(self.proc.pid, resource.RLIMIT_NOFILE, (count, count))

    def open_store(self) -> sqlite3.Connection:
        """The kit's store, read-only (WAL lets it be read beside the daemon); close it."""
        db = sqlite3.connect(f"file:{self.state_dir / 'dropkit.db'}?mode=ro", uri=True,
                             timeout=30)
        db.row_factory = sqlite3.Row
        return db


class EventStream:
    """The kit's ``GET /api/events`` (server-sent events) read on a thread of its own: the
    staff stream (opened with a stream ticket from the staff token), or with ``staff=False``
    what anyone on the kit's Wi-Fi sees."""

    def __init__(self, kit: KitClient, staff: bool = True, source: str | None = None) -> None:
        path = "/api/events"
        if staff:
            ticket = kit.request("POST", "/api/staff/stream-ticket", staff=True)
            if ticket.status != 200:
                raise RuntimeError(f"no stream ticket: {ticket.status} {ticket.data}")
            path += "?ticket=" + ticket.data["ticket"]
        host, port = kit.address
        self._connection = http.client.HTTPConnection(
            host, port, timeout=30, source_address=(source, 0) if source else None)
        self._connection.request("GET", path)
        self._response = self._connection.getresponse()
        self.status = self._response.status
        self.events: list[tuple[str, Any]] = []
        """``(kind, data)`` in the order they came."""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        kind = ""
        try:
            for raw in self._response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                elif line.startswith("data: "):
                    self.events.append((kind, json.loads(line[len("data: "):])))
        except Exception:  # closed (see close), or the kit went away: the stream is over
            return
        finally:
            self._connection.close()

    def find(self, kind: str, **fields: Any) -> Any:
        """The first event of ``kind`` whose data has ``fields``, else None."""
        for seen, data in list(self.events):
            if seen == kind and all(data.get(k) == v for k, v in fields.items()):
                return data
        return None

    def close(self) -> None:
        """End the stream; the reading thread sees its end and closes the connection."""
        sock = self._connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def mosquitto_binary() -> str | None:
    """The mosquitto broker on this machine (Debian keeps it in /usr/sbin), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


class Broker(Child):
    """A mosquitto of our own: started, SIGKILLed, stopped and restarted on one port."""

    def __init__(self, workdir: Path, persistence: bool = False) -> None:
        super().__init__()
        self.workdir = workdir
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        # "user root": as root, mosquitto would otherwise drop to its own user and could not
        # write its log and persistence file in our directory.
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true", "user root",
                 f"persistence {'true' if persistence else 'false'}",
                 f"persistence_location {workdir}/", "autosave_interval 1",
                 "max_queued_messages 100000", "log_type error", "log_type warning",
                 f"log_dest file {workdir}/mosquitto.log"]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def kit_mqtt(self, **overrides: Any) -> dict[str, Any]:
        """A kit's ``[mqtt]`` for this broker, quick to notice it going and coming back."""
        return {"url": self.url, "reconnect_min_s": 0.1, "reconnect_max_s": 1.0,
                "telemetry_interval_s": 1.0, "reconcile_check_s": 0.5, **overrides}

    def start(self) -> Broker:
        """Start it and return once it listens (FileNotFoundError without mosquitto)."""
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("no mosquitto binary on PATH or in /usr/sbin")
        self._popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)

        def listening() -> bool:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False
        wait_for(listening, 10, "mosquitto listening")
        return self


class Hq(Child):
    """``dropkit hq`` in a subprocess, its output kept for the caller to read."""

    def __init__(self, broker: Broker, db: Path | str, stock: Path | None = None) -> None:
        super().__init__()
        self.broker, self.db, self.stock = broker, db, stock
        self.extra_args: list[str] = []

    def start(self, wait: bool = True) -> Self:
        """Start it; return once it is connected (or at once, without ``wait``: then
        :meth:`wait_connected`)."""
        stock = ["--stock", str(self.stock)] if self.stock else []
        self._spawn_agent("hq", "--broker", self.broker.url, "--db", str(self.db),
                          *self.extra_args, *stock)
        return self.wait_connected() if wait else self

    def wait_connected(self) -> Self:
        wait_for(lambda: any("HQ connected" in line for line in self.log), 15, "HQ connected")
        return self

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Rows of the ledger (SQLite or PostgreSQL; ``?`` placeholders) as tuples."""
        return query_ledger(self.db, sql, *args)


def query_ledger(target: Path | str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of HQ's ledger at ``target`` (a SQLite file or a ``postgresql://`` URL), as tuples."""
    from agent.hq.sql import is_postgresql

    if is_postgresql(target):
        import psycopg

        with psycopg.connect(str(target), autocommit=True) as conn:
            return conn.execute(sql.replace("?", "%s"), args).fetchall()
    db = sqlite3.connect(target, timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()
