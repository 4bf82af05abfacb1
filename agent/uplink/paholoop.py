"""paho-mqtt on the kit's asyncio loop, through paho's external-loop interface.

The loop watches paho's socket and calls ``loop_read`` / ``loop_write``; a task calls
``loop_misc`` for the keepalive; only the blocking connect runs on a worker thread. So every
paho callback runs on the loop, which owns all state, and a PUBACK frees an in-flight slot that
the drain refills within the same loop (a hand-off between threads held a drain to well under
half of raw paho's rate). :class:`PahoOnLoop` is the mixin the uplink's session is built on.

paho passes on what a callback raises, half-way through the packet it was handling, and its
reader would then handle that packet again. So an error out of ``loop_read`` or ``loop_write``
ends the connection, and the session's connection part raises it (the supervisor logs it,
shows the part degraded and starts it again), rather than an asyncio callback error that leaves
the connection as it was.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any


class PahoOnLoop:
    """Serves ``self.client`` (a paho client) on ``self._loop``; the session sets the
    attributes below and registers the socket callbacks."""

    client: Any
    _loop: asyncio.AbstractEventLoop | None
    _loop_thread: int
    _serving: bool
    _socket_gone: asyncio.Event
    _failure: Exception | None

    def _watch_socket_callbacks(self) -> None:
        """Have paho tell the loop about its socket."""
        self.client.on_socket_close = self._on_socket_close
        self.client.on_socket_register_write = self._on_socket_register_write
        self.client.on_socket_unregister_write = self._on_socket_unregister_write

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._serving:
                self.client.loop_misc()  # PINGREQ when due; a silent broker closes the socket

    def _readable(self) -> None:
        try:
            self.client.loop_read()
        except Exception as exc:
            self._give_up_connection(exc)

    def _writable(self) -> None:
        try:
            self.client.loop_write()
        except Exception as exc:
            self._give_up_connection(exc)

    def _give_up_connection(self, exc: Exception) -> None:
        """Read no more of this connection and disconnect; ``exc`` is the connection's end."""
        if self._failure is None:
            self._failure = exc
        sock = self.client.socket()
        if sock is not None:
            self._loop.remove_reader(sock)
        self.client.disconnect()  # once written, paho closes the socket (_on_socket_close)

    def _on_socket_register_write(self, client, userdata, sock) -> None:
        # paho asks from the connect's worker thread too (its CONNECT packet).
        self._on_loop(lambda: self.client.socket() is sock and self._loop.add_writer(
            sock, self._writable))

    def _on_socket_unregister_write(self, client, userdata, sock) -> None:
        self._on_loop(lambda: self._loop.remove_writer(sock))

    def _on_socket_close(self, client, userdata, sock) -> None:
        # Called before paho closes the descriptor: forget it while it is still valid.
        def forget() -> None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
            self._socket_gone.set()
        self._on_loop(forget)

    def _on_loop(self, fn: Callable[[], object]) -> None:
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            fn()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    @staticmethod
    async def _published_within(info: Any, timeout: float) -> bool:
        """Wait on the loop (which delivers the PUBACK) for a QoS 1 message to be acknowledged."""
        deadline = time.monotonic() + timeout
        while not info.is_published():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True
