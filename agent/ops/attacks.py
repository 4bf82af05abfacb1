"""Hostile clients on loopback, for ``dropkit drill hostile-client`` and the tests: a header
flood (a request whose headers never end) and half-sent requests (a head that stops half way
and holds its connection). Each comes from a loopback address the caller picks (the whole of
127.0.0.0/8 is local, so 127.0.0.1 and 127.0.0.2 are two clients to the kit). Stdlib only.
"""

from __future__ import annotations

import contextlib
import resource
import selectors
import socket
import time
from dataclasses import dataclass

HALF_HEAD = (b"POST /api/orders HTTP/1.1\r\nHost: kit\r\nContent-Type: application/json\r\n"
             b"Content-Length: 64\r\nX-Half: ")
"""A request head that stops in the middle of a header: the kit waits for the rest."""


@dataclass(frozen=True)
class Flooded:
    """What one header flood did: the bytes it got in, and the status the kit answered (None
    when the kit closed without one, or never answered)."""

    sent: int
    status: int | None


def _connect(address: tuple[str, int], source: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.bind((source, 0))
    sock.connect(address)
    return sock


def status_line(sock: socket.socket) -> int | None:
    """The status of what the kit sent back on ``sock`` (None: closed without an answer)."""
    try:
        head = sock.recv(4096)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[0].startswith(b"HTTP/") else None


def statuses(sockets: list[socket.socket], timeout: float) -> list[int | None]:
    """The status the kit answered on each of ``sockets`` (as :func:`status_line`), waiting at
    most ``timeout`` s for them all: None for one closed without an answer or not answered by
    then."""
    found: dict[socket.socket, int | None] = {}
    end = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        while len(found) < len(sockets) and (left := end - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                found[sock] = status_line(sock)
                selector.unregister(sock)
    return [found.get(sock) for sock in sockets]


def header_flood(address: tuple[str, int], total: int, source: str = "127.0.0.1",
                 timeout: float = 30) -> Flooded:
    """Open a request and send headers, 1 KiB each, until ``total`` bytes are out or the kit
    closes the connection; then read its answer."""
    line = b"X-Flood: " + b"a" * 1013 + b"\r\n"
    block = line * 64
    sent = 0
    with contextlib.closing(_connect(address, source, timeout)) as sock:
        try:
            sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: kit\r\n")
            while sent < total:
                sock.sendall(block)
                sent += len(block)
        except OSError:  # the kit closed it: the point
            pass
        return Flooded(sent, status_line(sock))


def half_sent(address: tuple[str, int], count: int, source: str = "127.0.0.1",
              timeout: float = 10) -> list[socket.socket]:
    """``count`` connections, each with half a request head sent; the caller closes them. A
    connection the kit refused at once is in the list too (closed on the kit's side)."""
    raise_open_files(count + 256)
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = _connect(address, source, timeout)
            held.append(sock)
            with contextlib.suppress(OSError):
                sock.sendall(HALF_HEAD)
    except BaseException:
        close_all(held)
        raise
    return held


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def raise_open_files(needed: int) -> None:
    """Let this process open ``needed`` files, if its hard limit allows (else OSError)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise OSError(f"this process may open {hard} files; {needed} are needed")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
