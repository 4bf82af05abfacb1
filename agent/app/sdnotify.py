"""systemd's notify protocol, spoken directly: one datagram to ``$NOTIFY_SOCKET``.

``READY=1`` once the store is open and HTTP serves; ``WATCHDOG=1`` from the event loop itself,
so a hung loop stops the pings and systemd restarts the daemon; ``STOPPING=1`` on the way out.
Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing.

    >>> notify("READY=1")  # no $NOTIFY_SOCKET here: nothing is sent
    False
"""

from __future__ import annotations

import asyncio
import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` to systemd; True when there was a socket to send it to."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())
    return True


def watchdog_interval() -> float | None:
    """Half of systemd's ``WatchdogSec`` for this process, or None when there is no watchdog."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


async def keep_watchdog_fed(interval: float) -> None:
    """Ping the watchdog from the event loop until cancelled."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
