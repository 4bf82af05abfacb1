"""The HTTP/1.1 server's bounds: uvicorn's httptools protocol with a limit on everything a
client can make it hold.

uvicorn bounds none of these itself: httptools keeps an unfinished header block whole, however
long it grows (five connections sending headers that never end took the agent from 66 MB to
1.2 GB in 4 s); a connection that sends half a request holds its file descriptor for ever (1050
of them took every descriptor, and each accept() that failed logged a traceback); and the
app only sees a request once its head is complete, so nothing in front of the app can help.
:class:`BoundedProtocol` adds, per connection:

- a head (request line and headers) of at most :attr:`HttpLimits.max_head_bytes` and
  :attr:`HttpLimits.max_headers`: else ``431`` and the connection closes;
- a deadline for the request, head and body (``[http] request_timeout_s``), from the connection's
  start or the first byte of the next request: else ``408`` and it closes;
- a deadline for a client that stops reading what it is sent (:attr:`HttpLimits.write_stall_s`);
- and, across connections (:class:`Gate`), a cap on the connections open overall and from one
  address (``[http] max_connections``, ``max_connections_per_client``): one over is answered at
  once and closed, so it never holds a descriptor: ``503 busy`` when the kit is full, ``429
  too_many_connections`` when it is that address's doing (the kit still serves the others).

uvicorn's own idle keep-alive timeout stays (``HttpLimits.keep_alive_s``). Each refusal is
counted by a :class:`~agent.web.tally.Tally`: one log line per interval, never one per
connection. docs/deploy.md explains the numbers.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agent.web.errors import status_of
from agent.web.tally import Tally

log = logging.getLogger("dropkit.http")

REASONS = {408: b"Request Timeout", 400: b"Bad Request", 429: b"Too Many Requests",
           431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


@dataclass(frozen=True)
class HttpLimits:
    max_connections: int = 512
    max_connections_per_client: int = 64
    request_timeout_s: float = 10.0
    keep_alive_s: int = 5
    max_head_bytes: int = 16384
    max_headers: int = 64
    write_stall_s: float = 30.0
    linger_s: float = 1.0
    """After a 408 or 431, the connection reads (and drops) what the client still sends this
    long before it closes, so that the client reads the answer rather than a reset."""


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop httptools reading a head over the limits."""


def answer(code: str, detail: str) -> bytes:
    """A whole HTTP response, ``{"error": code, "detail": ...}``, closing the connection."""
    status = status_of(code)
    body = json.dumps({"error": code, "detail": detail}).encode()
    retry = b"retry-after: 2\r\n" if status in (429, 503) else b""
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"%sconnection: close\r\n\r\n%s" % (status, REASONS[status], len(body), retry, body))


BUSY = answer("busy", "the kit has too many connections open; try again in a moment")
TOO_MANY = answer("too_many_connections", "too many connections are open from this address; "
                  "close one, or try again in a moment")
HEAD_TOO_LARGE = answer("headers_too_large", "the request's headers are too large")
TOO_SLOW = answer("request_timeout", "the request did not arrive in time; send it again")
BAD_REQUEST = answer("bad_request", "that is not an HTTP request the kit understands")


class Gate:
    """The connections open, overall and by client address, and the tally of refusals; one per
    server, shared by its connections."""

    def __init__(self, limits: HttpLimits, tally: Tally) -> None:
        self.limits, self.tally = limits, tally
        self.open = 0
        self.by_client: Counter[str] = Counter()

    def admit(self, client: str) -> tuple[str, bytes] | None:
        """Count a new connection from ``client`` in (None), or refuse it: the condition to
        log, and the answer."""
        if self.open >= self.limits.max_connections:
            return "connection refused: the kit has too many connections open", BUSY
        if self.by_client[client] >= self.limits.max_connections_per_client:
            return "connection refused: too many connections from one address", TOO_MANY
        self.open += 1
        self.by_client[client] += 1
        return None

    def release(self, client: str) -> None:
        self.open -= 1
        self.by_client[client] -= 1
        if not self.by_client[client]:
            del self.by_client[client]


class BoundedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded (see the module); ``gate`` is set by
    :func:`protocol_class`."""

    gate: Gate

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address = ""
        self._counted = False
        self._in_head = True
        self._head_bytes = 0
        self._head_size = 0
        self._headers = 0
        self._refused = False
        self._deadline: asyncio.TimerHandle | None = None
        self._stall: asyncio.TimerHandle | None = None

    def send_400_response(self, msg: str) -> None:
        """What the parser refuses before the app sees it (a made-up method, a broken chunk,
        bytes that are not HTTP) is answered in the API's error shape too, and closed."""
        self.transport.write(BAD_REQUEST)
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else "?"
        refused = self.gate.admit(self._address)
        if refused is not None:
            condition, response = refused
            self.gate.tally.note(condition, self._address)
            transport.write(response)
            transport.close()
            return
        self._counted = True
        self._arm_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._deadline, self._stall):
            if timer is not None:
                timer.cancel()
        self._deadline = self._stall = None
        if self._counted:
            self._counted = False
            self.gate.release(self._address)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused or self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # no upgrades here (no websockets): the request is served as plain HTTP
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse("request refused: headers too large", HEAD_TOO_LARGE)
            else:
                self._refuse("request refused: not HTTP", BAD_REQUEST)
            return
        if self._in_head and self._head_bytes > self.gate.limits.max_head_bytes:
            self._refuse("request refused: headers too large", HEAD_TOO_LARGE)

    def _refuse(self, condition: str, response: bytes) -> None:
        self.gate.tally.note(condition, self._address)
        self._refused = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's answer, if it comes, goes nowhere
            self.cycle.message_event.set()
            if self.cycle.response_started:
                self.transport.close()
                return
        self.transport.write(response)
        self.transport.write_eof()
        self.loop.call_later(self.gate.limits.linger_s, self.transport.close)

    def _arm_deadline(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.gate.limits.request_timeout_s,
                                                  self._too_slow)

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._refuse("request refused: too slow", TOO_SLOW)

    # the parser's callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = self._headers = 0
        self._arm_deadline()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        if self._head_size > self.gate.limits.max_head_bytes:
            raise HeadTooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers += 1
        self._head_size += len(name) + len(value) + 4
        if self._headers > self.gate.limits.max_headers or \
                self._head_size > self.gate.limits.max_head_bytes:
            raise HeadTooLarge
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # what comes next is the next request's head
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    # the transport's flow control: a client that stops reading is let go

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(self.gate.limits.write_stall_s, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _stalled(self) -> None:
        self._stall = None
        self.gate.tally.note("connection closed: the client stopped reading", self._address)
        self.transport.abort()


def protocol_class(limits: HttpLimits, tally: Tally) -> type[BoundedProtocol]:
    """A :class:`BoundedProtocol` of its own :class:`Gate`, for ``uvicorn.Config(http=...)``."""
    return type("BoundedProtocol", (BoundedProtocol,), {"gate": Gate(limits, tally)})
