"""An Epson TM-style receipt printer on TCP, for tests, drills and ``dropkit sim``.

:class:`PrinterSimulator` listens like a network printer (port 9100 by default), reads the
ESC/POS stream python-escpos sends and keeps every receipt (everything up to a cut) as a
:class:`PrintedReceipt`: its text, the payloads of its native QR codes and its raw bytes. Given
an ``output_dir`` it also writes ``receipt-<n>.txt`` and ``receipt-<n>.png`` for a person to
look at. It answers DLE EOT status queries bit for bit like an Epson TM printer.

Understood: text in the code page chosen with ESC t, LF and ESC d, bold, underline, character
sizes (ESC !, ESC E, ESC -, GS !), white on black (GS B), alignment (ESC a), native QR codes
(GS ( k), cut (GS V) and initialise (ESC @). Lines longer than the paper wrap, as on a real
printer. Other commands are skipped by their length in the Epson reference (raster images
included) and leave no trace on the receipt (:mod:`simulators.escpos_stream`; the pictures are
:mod:`simulators.receipt_image`'s).

Faults for drills: :meth:`~PrinterSimulator.set_paper` (``"near_end"``, ``"out"``),
:meth:`~PrinterSimulator.set_cover_open` and :meth:`~PrinterSimulator.set_silent` (connections
are accepted, data is dropped, nothing is answered). With the paper out or the cover open the
printer is offline: it answers status queries and prints nothing. A real printer would keep
the job in its buffer and print it once the paper is replaced; the simulator drops it, so a
test can tell that nothing printed.

Example::

    with PrinterSimulator(port=0, paper_width_mm=58, output_dir=Path("receipts")) as sim:
        ...  # print to 127.0.0.1:sim.port
        [receipt] = sim.wait_for_receipts(1)
"""

from __future__ import annotations

import socket
import socketserver
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args

from hw.printer.receipt import DOTS_BY_WIDTH_MM
from simulators.escpos_stream import CELL_WIDTH, DLE, EOT, PrintModel, Sheet, command_size
from simulators.receipt_image import render_png

PaperState = Literal["ok", "near_end", "out"]
__all__ = ["DOTS_BY_WIDTH_MM", "PaperState", "PrintedReceipt", "PrinterSimulator"]

_POLL_S = 0.05

_STATUS_REQUEST = bytes([DLE, EOT])  # DLE EOT n

# DLE EOT n answers (Epson ESC/POS reference): bits 1 and 4 always set, bits 0 and 7 clear.
_STATUS_FIXED_BITS = 0b0001_0010
_OFFLINE_BIT = 0b0000_1000  # n=1, bit 3
_COVER_OPEN_BIT = 0b0000_0100  # n=2, bit 2
_PAPER_END_STOP_BIT = 0b0010_0000  # n=2, bit 5
_PAPER_NEAR_END_BITS = 0b0000_1100  # n=4, bits 2-3
_PAPER_OUT_BITS = 0b0110_0000  # n=4, bits 5-6


@dataclass(frozen=True)
class PrintedReceipt:
    """One receipt as it came out of the printer: everything up to a cut."""

    text: str
    qr_payloads: list[str]
    raw: bytes


class PrinterSimulator:
    """An ESC/POS receipt printer on TCP with paper, a cover and a way to go silent."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9100, *,
                 paper_width_mm: int = 80, output_dir: Path | None = None) -> None:
        if paper_width_mm not in DOTS_BY_WIDTH_MM:
            raise ValueError(f"paper width must be one of {sorted(DOTS_BY_WIDTH_MM)} mm")
        self.host = host
        self.paper_width_mm = paper_width_mm
        self.output_dir = output_dir
        self._requested_port = port
        self._changed = threading.Condition()
        self._print_model = PrintModel(columns=DOTS_BY_WIDTH_MM[paper_width_mm] // CELL_WIDTH)
        self._receipts: list[PrintedReceipt] = []
        self._paper: PaperState = "ok"
        self._cover_open = False
        self._silent = False
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._serving: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on (the free one picked for port 0)."""
        if self._server is None:
            raise RuntimeError("the printer simulator is not started")
        return self._server.server_address[1]

    @property
    def receipts(self) -> list[PrintedReceipt]:
        with self._changed:
            return list(self._receipts)

    def set_paper(self, paper: PaperState) -> None:
        if paper not in get_args(PaperState):
            raise ValueError(f"paper must be one of {get_args(PaperState)}, not {paper!r}")
        with self._changed:
            self._paper = paper

    def set_cover_open(self, cover_open: bool) -> None:
        with self._changed:
            self._cover_open = cover_open

    def set_silent(self, silent: bool) -> None:
        """Silent: accept connections, drop what they send, never answer."""
        with self._changed:
            self._silent = silent

    def wait_for_receipts(self, count: int, timeout_s: float = 5.0) -> list[PrintedReceipt]:
        """All receipts so far, once there are at least ``count``; TimeoutError otherwise."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self._receipts) >= count, timeout_s):
                raise TimeoutError(f"{len(self._receipts)} of {count} receipts printed "
                                   f"after {timeout_s} s")
            return list(self._receipts)

    def start(self) -> PrinterSimulator:
        self._stopping.clear()
        self._server = _Server((self.host, self._requested_port), self)
        self._serving = threading.Thread(target=self._server.serve_forever,
                                         kwargs={"poll_interval": _POLL_S},
                                         name=f"printer-simulator:{self.port}", daemon=True)
        self._serving.start()
        return self

    def stop(self) -> None:
        """Stop listening and close every connection."""
        if self._server is None or self._serving is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()  # joins the connection threads, which see _stopping
        self._serving.join()
        self._server = self._serving = None

    def __enter__(self) -> PrinterSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _serve(self, connection: socket.socket) -> None:
        connection.settimeout(_POLL_S)
        pending = bytearray()
        while not self._stopping.is_set():
            try:
                data = connection.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            if self._silent:
                pending.clear()
                continue
            pending += data
            while (size := command_size(pending)) is not None:
                reply = self._execute(bytes(pending[:size]))
                del pending[:size]
                if not reply:
                    continue
                try:
                    connection.sendall(reply)
                except OSError:
                    return

    def _execute(self, command: bytes) -> bytes:
        """Carry out one command; return the printer's answer (empty for most commands)."""
        with self._changed:
            if command[:2] == _STATUS_REQUEST:
                return self._status(command[2])
            if command[0] == DLE:  # other real-time commands: nothing to print or answer
                return b""
            if self._paper == "out" or self._cover_open:
                self._print_model.discard()
                return b""
            sheet = self._print_model.apply(command)
            if sheet is not None:
                self._keep(sheet)
            return b""

    def _status(self, request: int) -> bytes:
        """The answer to DLE EOT ``request``, as an Epson TM printer gives it."""
        paper_out = self._paper == "out"
        match request:
            case 1:  # printer status
                bits = _OFFLINE_BIT if paper_out or self._cover_open else 0
            case 2:  # offline cause
                bits = ((_COVER_OPEN_BIT if self._cover_open else 0)
                        | (_PAPER_END_STOP_BIT if paper_out else 0))
            case 3:  # error cause: none
                bits = 0
            case 4:  # roll paper sensor
                bits = {"ok": 0, "near_end": _PAPER_NEAR_END_BITS,
                        "out": _PAPER_NEAR_END_BITS | _PAPER_OUT_BITS}[self._paper]
            case _:
                return b""
        return bytes([_STATUS_FIXED_BITS | bits])

    def _keep(self, sheet: Sheet) -> None:
        receipt = PrintedReceipt(text=sheet.text, qr_payloads=sheet.qr_payloads, raw=sheet.raw)
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            stem = self.output_dir / f"receipt-{len(self._receipts) + 1}"
            rows = [receipt.text, *(f"[QR] {payload}" for payload in receipt.qr_payloads)]
            stem.with_suffix(".txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
            render_png(sheet, DOTS_BY_WIDTH_MM[self.paper_width_mm]).save(
                stem.with_suffix(".png"))
        self._receipts.append(receipt)
        self._changed.notify_all()


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = False  # server_close() joins the connection threads

    def __init__(self, address: tuple[str, int], simulator: PrinterSimulator) -> None:
        self.simulator = simulator
        super().__init__(address, _Connection)


class _Connection(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.server.simulator._serve(self.request)
