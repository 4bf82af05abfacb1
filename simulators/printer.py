"""An Epson TM-style receipt printer on TCP, for tests, drills and ``dropkit sim``.

:class:`PrinterSimulator` listens like a network printer (port 9100 by default), reads the
ESC/POS stream python-escpos sends and keeps every receipt (everything up to a cut) as a
:class:`PrintedReceipt`: its text, the payloads of its native QR codes and its raw bytes. Given
an ``output_dir`` it also writes ``receipt-<n>.txt`` and ``receipt-<n>.png`` for a person to
look at. It answers DLE EOT status queries bit for bit like an Epson TM printer.

Understood: text in the code page chosen with ESC t, LF and ESC d, bold, underline, double
width and height (ESC !, ESC E, ESC -, GS !), alignment (ESC a), native QR codes (GS ( k),
cut (GS V) and initialise (ESC @). Lines longer than the paper wrap, as on a real printer.
Other commands are skipped by their length in the Epson reference (raster images included)
and leave no trace on the receipt.

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
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Literal, get_args

import qrcode
from PIL import Image, ImageDraw, ImageFont

PaperState = Literal["ok", "near_end", "out"]
Alignment = Literal["left", "center", "right"]

DOTS_BY_WIDTH_MM = {58: 384, 80: 576}
"""Printable dots per line of a 203 dpi print head on each paper width."""

_CELL_WIDTH, _CELL_HEIGHT = 12, 24  # Font A, in dots
_LINE_GAP = 6  # dots between lines at the default line spacing
_FONT_SIZE = 16
_MARGIN = 12
_POLL_S = 0.05

_LF, _DLE, _ESC, _GS = 0x0A, 0x10, 0x1B, 0x1D
_EOT, _ENQ = 0x04, 0x05
_STATUS_REQUEST = bytes([_DLE, _EOT])  # DLE EOT n

# DLE EOT n answers (Epson ESC/POS reference): bits 1 and 4 always set, bits 0 and 7 clear.
_STATUS_FIXED_BITS = 0b0001_0010
_OFFLINE_BIT = 0b0000_1000  # n=1, bit 3
_COVER_OPEN_BIT = 0b0000_0100  # n=2, bit 2
_PAPER_END_STOP_BIT = 0b0010_0000  # n=2, bit 5
_PAPER_NEAR_END_BITS = 0b0000_1100  # n=4, bits 2-3
_PAPER_OUT_BITS = 0b0110_0000  # n=4, bits 5-6

_CODE_PAGES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865",
               16: "cp1252", 17: "cp866", 18: "cp852", 19: "cp858"}
_ALIGNMENTS: dict[int, Alignment] = {0: "left", 1: "center", 2: "right"}
# Parameter bytes of the ESC and GS commands that do not take exactly one.
_ESC_PARAMETER_COUNTS = {"@": 0, "2": 0, "<": 0, "i": 0, "m": 0,
                         "$": 2, "\\": 2, "B": 2, "c": 2, "p": 3}
_GS_PARAMETER_COUNTS = {":": 0, "$": 2, "L": 2, "P": 2, "W": 2, "\\": 2, "^": 3}
_CUT_MODES_WITH_FEED = {65, 66, 97, 98, 103, 104}  # GS V m n
_QR_SYMBOL = b"1"  # cn of GS ( k
_QR_ERROR_CORRECTION = {48: qrcode.constants.ERROR_CORRECT_L,
                        49: qrcode.constants.ERROR_CORRECT_M,
                        50: qrcode.constants.ERROR_CORRECT_Q,
                        51: qrcode.constants.ERROR_CORRECT_H}


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
        self._print_model = _PrintModel(columns=DOTS_BY_WIDTH_MM[paper_width_mm] // _CELL_WIDTH)
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
            while (size := _command_size(pending)) is not None:
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
            if command[0] == _DLE:  # other real-time commands: nothing to print or answer
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

    def _keep(self, sheet: _Sheet) -> None:
        receipt = PrintedReceipt(text=sheet.text, qr_payloads=sheet.qr_payloads, raw=sheet.raw)
        if self.output_dir is not None:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            stem = self.output_dir / f"receipt-{len(self._receipts) + 1}"
            rows = [receipt.text, *(f"[QR] {payload}" for payload in receipt.qr_payloads)]
            stem.with_suffix(".txt").write_text("\n".join(rows) + "\n", encoding="utf-8")
            _render_png(sheet, DOTS_BY_WIDTH_MM[self.paper_width_mm]).save(
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


@dataclass(frozen=True)
class _Style:
    bold: bool = False
    underline: int = 0  # dots: 0, 1 or 2
    width: int = 1  # character width multiplier
    height: int = 1


_Run = tuple[_Style, str]


@dataclass(frozen=True)
class _Line:
    align: Alignment
    runs: tuple[_Run, ...]

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.runs)


@dataclass(frozen=True)
class _QrCode:
    payload: str
    module_dots: int
    error_correction: int
    align: Alignment


@dataclass(frozen=True)
class _Sheet:
    """A cut-off receipt: its lines and codes in order, and the bytes that printed them."""

    blocks: tuple[_Line | _QrCode, ...]
    raw: bytes

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.blocks if isinstance(b, _Line)).rstrip("\n")

    @property
    def qr_payloads(self) -> list[str]:
        return [block.payload for block in self.blocks if isinstance(block, _QrCode)]


class _PrintModel:
    """The printer's modes, the line being composed and the receipt printed so far."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.blocks: list[_Line | _QrCode] = []
        self.raw = bytearray()
        self.initialise()

    def initialise(self) -> None:
        """ESC @: modes back to their defaults; the line not yet printed is dropped."""
        self.style = _Style()
        self.align: Alignment = "left"
        self.code_page = _CODE_PAGES[0]
        self.qr_module_dots = 3
        self.qr_error_correction = _QR_ERROR_CORRECTION[48]
        self.qr_payload = ""
        self.runs: list[_Run] = []

    def discard(self) -> None:
        """Forget the receipt in progress (it never reached the paper)."""
        self.blocks, self.raw, self.runs = [], bytearray(), []

    def apply(self, command: bytes) -> _Sheet | None:
        """Carry out one printing command; a cut returns the finished sheet."""
        self.raw += command
        lead = command[0]
        if lead == _ESC:
            self._escape(chr(command[1]), command[2:])
        elif lead == _GS:
            return self._group(chr(command[1]), command[2:])
        elif lead == _LF:
            self._feed_lines(1)
        elif lead >= 0x20:
            self._write(command.decode(self.code_page, errors="replace"))
        return None

    def _escape(self, code: str, parameters: bytes) -> None:
        match code:
            case "@":
                self.initialise()
            case "!":
                mode = parameters[0]
                self.style = _Style(bold=bool(mode & 0x08), underline=1 if mode & 0x80 else 0,
                                    width=2 if mode & 0x20 else 1, height=2 if mode & 0x10 else 1)
            case "E":
                self.style = replace(self.style, bold=bool(parameters[0] & 1))
            case "-":
                self.style = replace(self.style, underline=parameters[0] & 0b11)
            case "a" if not self.runs:  # only at the beginning of a line
                self.align = _ALIGNMENTS.get(parameters[0] & 0b11, self.align)
            case "t":
                self.code_page = _CODE_PAGES.get(parameters[0], self.code_page)
            case "d":
                self._feed_lines(parameters[0])

    def _group(self, code: str, parameters: bytes) -> _Sheet | None:
        match code:
            case "!":
                size = parameters[0]
                self.style = replace(self.style, width=(size >> 4 & 7) + 1, height=(size & 7) + 1)
            case "(" if parameters[:1] == b"k" and parameters[3:4] == _QR_SYMBOL:
                self._qr_function(parameters[4:5].decode("latin-1"), parameters[5:])
            case "V":
                return self._cut()
        return None

    def _qr_function(self, function: str, arguments: bytes) -> None:
        match function:
            case "C":
                self.qr_module_dots = arguments[0]
            case "E":
                self.qr_error_correction = _QR_ERROR_CORRECTION.get(arguments[0],
                                                                    self.qr_error_correction)
            case "P":  # store: m, then the data
                self.qr_payload = arguments[1:].decode("utf-8", errors="replace")
            case "Q":  # print the stored symbol
                if self.runs:
                    self._feed_lines(1)
                self.blocks.append(_QrCode(self.qr_payload, self.qr_module_dots,
                                           self.qr_error_correction, self.align))

    def _write(self, text: str) -> None:
        for char in text:
            if _cells(self.runs) + self.style.width > self.columns:
                self._feed_lines(1)
            if self.runs and self.runs[-1][0] == self.style:
                self.runs[-1] = (self.style, self.runs[-1][1] + char)
            else:
                self.runs.append((self.style, char))

    def _feed_lines(self, count: int) -> None:
        for _ in range(count):
            self.blocks.append(_Line(self.align, tuple(self.runs)))
            self.runs = []

    def _cut(self) -> _Sheet:
        if self.runs:
            self._feed_lines(1)
        sheet = _Sheet(tuple(self.blocks), bytes(self.raw))
        self.blocks, self.raw = [], bytearray()
        return sheet


def _cells(runs: Iterable[_Run]) -> int:
    """Character cells taken by ``runs`` (a double-width character takes two)."""
    return sum(style.width * len(text) for style, text in runs)


def _command_size(buffer: bytearray) -> int | None:
    """Length of the command at the start of ``buffer``; None until all of it has arrived."""
    if not buffer:
        return None
    lead = buffer[0]
    if lead >= 0x20:  # a run of text
        return next((i for i, byte in enumerate(buffer) if byte < 0x20), len(buffer))
    if lead not in (_DLE, _ESC, _GS):  # LF, CR and other one-byte controls
        return 1
    if len(buffer) < 2:
        return None
    code = chr(buffer[1])
    if lead == _DLE:
        size = 3 if buffer[1] in (_EOT, _ENQ) else 1  # DLE EOT n, DLE ENQ n
    elif lead == _ESC:
        size = 2 + _ESC_PARAMETER_COUNTS.get(code, 1)
    elif code == "(":  # GS ( fn pL pH, then pL + 256 pH bytes
        if len(buffer) < 5:
            return None
        size = 5 + buffer[3] + 256 * buffer[4]
    elif code == "v":  # GS v 0 m xL xH yL yH, then (xL + 256 xH) * (yL + 256 yH) bytes
        if len(buffer) < 8:
            return None
        size = 8 + (buffer[4] + 256 * buffer[5]) * (buffer[6] + 256 * buffer[7])
    elif code == "V":  # GS V m, and n for the modes that feed first
        if len(buffer) < 3:
            return None
        size = 4 if buffer[2] in _CUT_MODES_WITH_FEED else 3
    else:
        size = 2 + _GS_PARAMETER_COUNTS.get(code, 1)
    return size if len(buffer) >= size else None


def _render_png(sheet: _Sheet, dots_wide: int) -> Image.Image:
    """The receipt as it would look on paper, one pixel per dot."""
    font = ImageFont.load_default(size=_FONT_SIZE)
    pictures = [_line_picture(block, font) if isinstance(block, _Line) else _qr_picture(block)
                for block in sheet.blocks]
    page = Image.new("L", (dots_wide, sum(p.height for p in pictures) + 2 * _MARGIN), 255)
    top = _MARGIN
    for block, picture in zip(sheet.blocks, pictures, strict=True):
        left = {"left": 0, "center": (dots_wide - picture.width) // 2,
                "right": dots_wide - picture.width}[block.align]
        page.paste(picture, (max(left, 0), top))
        top += picture.height
    return page


def _line_picture(line: _Line, font: ImageFont.FreeTypeFont | ImageFont.ImageFont
                  ) -> Image.Image:
    """One printed line: each character in its Font A cell, scaled by its size."""
    height = max((style.height for style, _ in line.runs), default=1) * _CELL_HEIGHT
    width = _cells(line.runs) * _CELL_WIDTH
    picture = Image.new("L", (max(width, 1), height + _LINE_GAP), 255)
    left = 0
    for style, text in line.runs:
        run = Image.new("L", (len(text) * _CELL_WIDTH, _CELL_HEIGHT), 255)
        draw = ImageDraw.Draw(run)
        for index, char in enumerate(text):
            centre = index * _CELL_WIDTH + _CELL_WIDTH // 2
            glyph = unicodedata.normalize("NFKD", char)[0]  # the default font is ASCII: é → e
            for offset in (0, 1) if style.bold else (0,):  # emphasis: strike twice, shifted
                draw.text((centre + offset, _CELL_HEIGHT - 5), glyph, font=font, fill=0,
                          anchor="ms")
        if style.underline:
            draw.rectangle((0, _CELL_HEIGHT - style.underline, run.width, _CELL_HEIGHT), fill=0)
        scaled = run.resize((run.width * style.width, _CELL_HEIGHT * style.height),
                            Image.Resampling.NEAREST)
        picture.paste(scaled, (left, height - scaled.height))
        left += scaled.width
    return picture


def _qr_picture(code: _QrCode) -> Image.Image:
    symbol = qrcode.QRCode(box_size=code.module_dots, border=2,
                           error_correction=code.error_correction)
    symbol.add_data(code.payload)
    symbol.make(fit=True)
    return symbol.make_image().get_image().convert("L")
