r"""The ESC/POS the simulated printer understands: how long each command is, and what the
commands do to the receipt being printed (:class:`PrintModel`), up to a cut (a :class:`Sheet`).

    >>> model = PrintModel(columns=32)
    >>> data = bytearray(b"\x1bE\x01Hello\n\x1dV\x00")
    >>> sheets = []
    >>> while (size := command_size(data)) is not None:
    ...     sheet = model.apply(bytes(data[:size])); del data[:size]
    ...     sheets += [sheet] if sheet else []
    >>> sheets[0].text, sheets[0].blocks[0].runs[0][0].bold
    ('Hello', True)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

import qrcode

Alignment = Literal["left", "center", "right"]

CELL_WIDTH, CELL_HEIGHT = 12, 24  # Font A, in dots

LF, DLE, ESC, GS = 0x0A, 0x10, 0x1B, 0x1D
EOT, ENQ = 0x04, 0x05

_CODE_PAGES = {0: "cp437", 2: "cp850", 3: "cp860", 4: "cp863", 5: "cp865",
               15: "iso8859_7", 16: "cp1252", 17: "cp866", 18: "cp852", 19: "cp858"}
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
class Style:
    bold: bool = False
    underline: int = 0  # dots: 0, 1 or 2
    width: int = 1  # character width multiplier
    height: int = 1
    reverse: bool = False  # white on black (GS B)


Run = tuple[Style, str]


@dataclass(frozen=True)
class Line:
    align: Alignment
    runs: tuple[Run, ...]

    @property
    def text(self) -> str:
        return "".join(text for _, text in self.runs)


@dataclass(frozen=True)
class QrCode:
    payload: str
    module_dots: int
    error_correction: int
    align: Alignment


@dataclass(frozen=True)
class Sheet:
    """A cut-off receipt: its lines and codes in order, and the bytes that printed them."""

    blocks: tuple[Line | QrCode, ...]
    raw: bytes

    @property
    def text(self) -> str:
        return "\n".join(b.text for b in self.blocks if isinstance(b, Line)).rstrip("\n")

    @property
    def qr_payloads(self) -> list[str]:
        return [block.payload for block in self.blocks if isinstance(block, QrCode)]


class PrintModel:
    """The printer's modes, the line being composed and the receipt printed so far."""

    def __init__(self, columns: int) -> None:
        self.columns = columns
        self.blocks: list[Line | QrCode] = []
        self.raw = bytearray()
        self.initialise()

    def initialise(self) -> None:
        """ESC @: modes back to their defaults; the line not yet printed is dropped."""
        self.style = Style()
        self.align: Alignment = "left"
        self.code_page = _CODE_PAGES[0]
        self.qr_module_dots = 3
        self.qr_error_correction = _QR_ERROR_CORRECTION[48]
        self.qr_payload = ""
        self.runs: list[Run] = []

    def discard(self) -> None:
        """Forget the receipt in progress (it never reached the paper)."""
        self.blocks, self.raw, self.runs = [], bytearray(), []

    def apply(self, command: bytes) -> Sheet | None:
        """Carry out one printing command; a cut returns the finished sheet."""
        self.raw += command
        lead = command[0]
        if lead == ESC:
            self._escape(chr(command[1]), command[2:])
        elif lead == GS:
            return self._group(chr(command[1]), command[2:])
        elif lead == LF:
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
                self.style = Style(bold=bool(mode & 0x08), underline=1 if mode & 0x80 else 0,
                                   width=2 if mode & 0x20 else 1, height=2 if mode & 0x10 else 1,
                                   reverse=self.style.reverse)  # ESC ! leaves GS B alone
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

    def _group(self, code: str, parameters: bytes) -> Sheet | None:
        match code:
            case "!":
                size = parameters[0]
                self.style = replace(self.style, width=(size >> 4 & 7) + 1, height=(size & 7) + 1)
            case "B":
                self.style = replace(self.style, reverse=bool(parameters[0] & 1))
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
                self.blocks.append(QrCode(self.qr_payload, self.qr_module_dots,
                                           self.qr_error_correction, self.align))

    def _write(self, text: str) -> None:
        for char in text:
            if cells(self.runs) + self.style.width > self.columns:
                self._feed_lines(1)
            if self.runs and self.runs[-1][0] == self.style:
                self.runs[-1] = (self.style, self.runs[-1][1] + char)
            else:
                self.runs.append((self.style, char))

    def _feed_lines(self, count: int) -> None:
        for _ in range(count):
            self.blocks.append(Line(self.align, tuple(self.runs)))
            self.runs = []

    def _cut(self) -> Sheet:
        if self.runs:
            self._feed_lines(1)
        sheet = Sheet(tuple(self.blocks), bytes(self.raw))
        self.blocks, self.raw = [], bytearray()
        return sheet


def cells(runs: Iterable[Run]) -> int:
    """Character cells taken by ``runs`` (a double-width character takes two)."""
    return sum(style.width * len(text) for style, text in runs)


def command_size(buffer: bytearray) -> int | None:
    """Length of the command at the start of ``buffer``; None until all of it has arrived."""
    if not buffer:
        return None
    lead = buffer[0]
    if lead >= 0x20:  # a run of text
        return next((i for i, byte in enumerate(buffer) if byte < 0x20), len(buffer))
    if lead not in (DLE, ESC, GS):  # LF, CR and other one-byte controls
        return 1
    if len(buffer) < 2:
        return None
    code = chr(buffer[1])
    if lead == DLE:
        size = 3 if buffer[1] in (EOT, ENQ) else 1  # DLE EOT n, DLE ENQ n
    elif lead == ESC:
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
