"""A read-only NUT network server: upsd's protocol (docs/net-protocol.txt of Network UPS
Tools, protocol 1.3) for the kit's power, so Home Assistant's NUT integration, Prometheus NUT
exporters, ``upsc`` and a ``upsmon`` secondary can watch the kit without MQTT.

It answers from a snapshot (a callable giving the power status dict of
:meth:`agent.power.status.PowerStatus.to_dict`, as the coordinator holds it) and changes
nothing: ``SET``, ``INSTCMD``, ``FSD``, ``PRIMARY`` and ``LOGIN`` are refused as upsd refuses
a user without those rights (``USERNAME-REQUIRED``, ``PASSWORD-REQUIRED``, then
``ACCESS-DENIED``). Bounded: at most ``max_connections`` clients (one more is closed at once),
lines of at most :data:`MAX_LINE_BYTES`, and a client silent for ``idle_timeout_s`` is closed.
docs/power.md lists the variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config import NutConfig

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 512
"""The longest request line taken; a longer one is answered ERR INVALID-ARGUMENT and closed."""
PROTOCOL_VERSION = "1.3"
HELP = ("Commands: HELP VER PROTVER GET LIST SET INSTCMD LOGIN LOGOUT USERNAME PASSWORD "
        "STARTTLS")
# Commands upsd runs only for a user of upsd.users with the right; this server has none.
_NEEDS_USER = frozenset({"LOGIN", "PRIMARY", "MASTER", "FSD", "SET", "INSTCMD"})

Snapshot = Callable[[], Mapping[str, Any]]


def split_request(line: str) -> list[str]:
    """upsd's tokens: words split on spaces, "quoted" words kept whole, backslash escapes.

    >>> split_request('GET VAR kit "ups.status"'), split_request(r'USERNAME "a \\"b\\""')
    (['GET', 'VAR', 'kit', 'ups.status'], ['USERNAME', 'a "b"'])
    """
    tokens: list[str] = []
    word: list[str] | None = None
    quoted = escaped = False
    for char in line:
        if escaped:
            word = (word or []) + [char]
            escaped = False
        elif char == "\\":
            escaped = True
            word = word or []
        elif char == '"':
            quoted = not quoted
            word = word or []
        elif char.isspace() and not quoted:
            if word is not None:
                tokens.append("".join(word))
            word = None
        else:
            word = (word or []) + [char]
    if word is not None:
        tokens.append("".join(word))
    return tokens


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def nut_variables(power: Mapping[str, Any], fixed: Mapping[str, str]) -> dict[str, str] | None:
    """The NUT variables of a power status dict, sorted; None while nothing is known (upsd's
    DATA-STALE). What the kit does not measure (``output.voltage``, ``ups.load``) is left
    out, as a driver leaves out what its UPS does not report."""
    state = power.get("state", "unknown")
    if state == "unknown" or "sources" not in power:
        return None
    sources, ups = power["sources"], power.get("ups", {})
    values: dict[str, Any] = {
        **fixed,
        "ups.status": state,
        "battery.charge": None if ups.get("percent") is None else round(ups["percent"]),
        "battery.runtime": (None if ups.get("minutes_left") is None
                            else round(ups["minutes_left"] * 60)),
        "battery.voltage": (sources["battery"].get("volts")
                            if sources["battery"].get("volts") is not None else ups.get("volts")),
        "battery.current": sources["battery"].get("amps"),
        "input.voltage": sources["mains"].get("volts"),
        "ups.timer.shutdown": (None if power.get("shutdown_in_s") is None
                               else round(power["shutdown_in_s"])),
    }
    return {name: str(value) for name, value in sorted(values.items()) if value is not None}


class NutSession:
    """One client's conversation: :meth:`answer` takes a request line, gives the reply lines
    and whether to close."""

    def __init__(self, ups_name: str, description: str, snapshot: Snapshot,
                 fixed: Mapping[str, str], version_line: str) -> None:
        self.ups_name, self.description = ups_name, description
        self.snapshot, self.fixed, self.version_line = snapshot, fixed, version_line
        self.username: str | None = None
        self.password: str | None = None

    def answer(self, line: str) -> tuple[str, bool]:
        words = split_request(line)
        if not words:
            return "", False
        command, args = words[0].upper(), words[1:]
        if command == "LOGOUT":
            return "OK Goodbye\n", True
        if command in _NEEDS_USER:
            if self.username is None:
                return "ERR USERNAME-REQUIRED\n", False
            if self.password is None:
                return "ERR PASSWORD-REQUIRED\n", False
            return "ERR ACCESS-DENIED\n", False
        handler = {"VER": self._ver, "NETVER": self._netver, "PROTVER": self._netver,
                   "HELP": self._help, "USERNAME": self._username,
                   "PASSWORD": self._password, "STARTTLS": self._starttls,
                   "GET": self._get, "LIST": self._list}.get(command)
        if handler is None:
            return "ERR UNKNOWN-COMMAND\n", False
        return handler(args), False

    def _ver(self, args: list[str]) -> str:
        return self.version_line + "\n" if not args else "ERR INVALID-ARGUMENT\n"

    def _netver(self, args: list[str]) -> str:
        return PROTOCOL_VERSION + "\n" if not args else "ERR INVALID-ARGUMENT\n"

    def _help(self, args: list[str]) -> str:
        return HELP + "\n" if not args else "ERR INVALID-ARGUMENT\n"

    def _username(self, args: list[str]) -> str:
        return self._credential(args, "username")

    def _password(self, args: list[str]) -> str:
        return self._credential(args, "password")

    def _credential(self, args: list[str], name: str) -> str:
        """USERNAME or PASSWORD: kept (nothing checks it), once per connection."""
        if len(args) != 1:
            return "ERR INVALID-ARGUMENT\n"
        if getattr(self, name) is not None:
            return f"ERR ALREADY-SET-{name.upper()}\n"
        setattr(self, name, args[0])
        return "OK\n"

    def _starttls(self, args: list[str]) -> str:
        return "ERR FEATURE-NOT-CONFIGURED\n"

    def _variables(self) -> dict[str, str] | None:
        return nut_variables(self.snapshot(), self.fixed)

    def _get(self, args: list[str]) -> str:
        if len(args) < 2:
            return "ERR INVALID-ARGUMENT\n"
        kind, ups = args[0].upper(), args[1]
        if ups != self.ups_name:
            return "ERR UNKNOWN-UPS\n"
        if kind == "UPSDESC" and len(args) == 2:
            return f"UPSDESC {ups} {_quote(self.description)}\n"
        if kind == "NUMLOGINS" and len(args) == 2:
            return f"NUMLOGINS {ups} 0\n"
        if kind == "VAR" and len(args) == 3:
            variables = self._variables()
            if variables is None:
                return "ERR DATA-STALE\n"
            if args[2] not in variables:
                return "ERR VAR-NOT-SUPPORTED\n"
            return f"VAR {ups} {args[2]} {_quote(variables[args[2]])}\n"
        return "ERR INVALID-ARGUMENT\n"

    def _list(self, args: list[str]) -> str:
        if not args:
            return "ERR INVALID-ARGUMENT\n"
        kind = args[0].upper()
        if kind == "UPS" and len(args) == 1:
            return (f"BEGIN LIST UPS\nUPS {self.ups_name} {_quote(self.description)}\n"
                    "END LIST UPS\n")
        if len(args) != 2 or kind not in ("VAR", "RW", "CMD", "CLIENT"):
            return "ERR INVALID-ARGUMENT\n"
        ups = args[1]
        if ups != self.ups_name:
            return "ERR UNKNOWN-UPS\n"
        lines = []
        if kind == "VAR":
            variables = self._variables()
            if variables is None:
                return "ERR DATA-STALE\n"
            lines = [f"VAR {ups} {name} {_quote(value)}\n" for name, value in variables.items()]
        return f"BEGIN LIST {kind} {ups}\n" + "".join(lines) + f"END LIST {kind} {ups}\n"


class NutServer:
    """The NUT server of one kit; :meth:`run` serves until cancelled (a supervised part)."""

    def __init__(self, config: NutConfig, snapshot: Snapshot, *, description: str,
                 fixed: Mapping[str, str], version_line: str) -> None:
        self.config, self.snapshot = config, snapshot
        self.description, self.fixed, self.version_line = description, fixed, version_line
        self.port: int | None = None
        """The port listened on, once listening (``port = 0`` in the config picks one)."""
        self._clients = 0

    async def run(self) -> None:
        server = await asyncio.start_server(self._serve, self.config.listen, self.config.port,
                                            limit=MAX_LINE_BYTES)
        self.port = server.sockets[0].getsockname()[1]
        log.info("NUT server on %s:%d (ups %s)", self.config.listen, self.port,
                 self.config.ups_name)
        try:
            async with server:
                await server.serve_forever()
        finally:
            self.port = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= self.config.max_connections:
            log.warning("NUT server: %d clients already, one more refused",
                        self._clients)
            writer.close()
            return
        self._clients += 1
        session = NutSession(self.config.ups_name, self.description, self.snapshot,
                             self.fixed, self.version_line)
        try:
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(),
                                                 self.config.idle_timeout_s)
                except (ValueError, asyncio.LimitOverrunError):  # a line past the limit
                    writer.write(b"ERR INVALID-ARGUMENT\n")
                    break
                if not raw:
                    break
                reply, close = session.answer(raw.decode("utf-8", "replace"))
                writer.write(reply.encode())
                await writer.drain()
                if close:
                    break
        except (TimeoutError, ConnectionError):
            pass  # idle past the timeout, or the client went away
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
