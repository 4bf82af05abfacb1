"""A line channel from the VM to the host: what the guest writes, the host has the moment after.

The guest writes lines to a virtio serial port (``/dev/virtio-ports/vmtest.lines``); QEMU
passes them to a Unix socket the host listens on, and a thread here reads them into a list,
each with the host's time since the VM was launched. The channel is FIFO, and bytes in the
socket outlive QEMU, so what the host has is always a prefix of what the guest wrote: a guest
``write()`` can return before QEMU has passed the bytes on, so a line written just before QEMU
is killed may never arrive, but a line that arrived was written, in order, when the guest
wrote it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

PORT_NAME = "vmtest.lines"  # the guest's /dev/virtio-ports/vmtest.lines
GUEST_PORT = Path("/dev/virtio-ports") / PORT_NAME


@dataclass(frozen=True)
class Line:
    at: float  # seconds since the VM was launched, host clock
    text: str


class LineChannel:
    """The host's end: listen before QEMU starts, :meth:`accept` once it has."""

    def __init__(self, path: Path, log: Path) -> None:
        self.path = path
        self.log = log
        self.lines: list[Line] = []
        self.closed = False
        self._changed = threading.Condition()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path.unlink(missing_ok=True)
        self._listener.bind(str(path))
        self._listener.listen(1)
        self._reader: threading.Thread | None = None
        self._started = time.monotonic()

    def qemu_arguments(self) -> list[str]:
        """QEMU connects to the host's socket and gives the guest the port."""
        return ["-chardev", f"socket,id=lines,path={self.path}",
                "-device", "virtio-serial-pci",
                "-device", f"virtserialport,chardev=lines,name={PORT_NAME}"]

    def accept(self, started: float, timeout: float = 60) -> None:
        """Take QEMU's connection (it connects as it starts) and read from it until EOF."""
        self._started = started
        self._listener.settimeout(timeout)
        try:
            connection, _ = self._listener.accept()
        finally:
            self.close()
        connection.settimeout(None)
        self._reader = threading.Thread(target=self._read, args=(connection,), daemon=True,
                                        name="vm-lines")
        self._reader.start()

    def close(self) -> None:
        """Stop listening (QEMU connected, or never will)."""
        self._listener.close()
        self.path.unlink(missing_ok=True)

    def _read(self, connection: socket.socket) -> None:
        pending = b""
        with connection, self.log.open("a") as log:
            while chunk := connection.recv(65536):
                now = time.monotonic() - self._started
                *complete, pending = (pending + chunk).split(b"\n")
                with self._changed:
                    for raw in complete:
                        text = raw.decode(errors="replace")
                        self.lines.append(Line(now, text))
                        log.write(f"{now:9.3f} {text}\n")
                    self._changed.notify_all()
            with self._changed:
                self.closed = True
                self._changed.notify_all()

    def wait_for(self, found: Callable[[list[Line]], bool], timeout: float) -> bool:
        """Block until ``found(lines)`` holds (True) or the channel closed or time ran out."""
        with self._changed:
            return self._changed.wait_for(lambda: found(self.lines) or self.closed, timeout) \
                and found(self.lines)

    def drain(self, timeout: float = 30) -> list[Line]:
        """Everything the guest wrote, once QEMU is gone and the socket has run dry."""
        if self._reader is not None:
            self._reader.join(timeout)
        with self._changed:
            return list(self.lines)
