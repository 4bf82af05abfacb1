"""A receipt or slip as the agent words it, and its layout in ESC/POS for any python-escpos
printer. Every word and amount comes worded; the layout only places them on the paper."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hw.printer.library import load_escpos

if TYPE_CHECKING:
    from escpos.escpos import Escpos

COLUMNS_BY_WIDTH_MM = {58: 32, 80: 48}
"""Characters per line in Font A for each paper width."""
DOTS_BY_WIDTH_MM = {58: 384, 80: 576}
"""Printable dots per line of a 203 dpi print head on each paper width."""
QR_MODULE_DOTS = 6
"""The most dots per QR module (a short link's code is about 30 mm wide); longer links get
smaller modules, so that the code fits the paper."""
MAX_QR_CHARS = 450
"""The longest QR payload printed, in UTF-8 bytes: version 16 at level M holds 450."""

# Bytes a QR code of each version holds at error correction level M (ISO/IEC 18004, table 7).
_QR_BYTES_AT_M = (14, 26, 42, 62, 84, 106, 122, 152, 180, 213, 251, 287, 331, 362, 412, 450)
_QR_QUIET_MODULES = 8  # four on each side


@dataclass(frozen=True)
class ReceiptLine:
    """One sold line as printed: ``qty x name`` and its amount."""

    qty: int
    name: str
    amount: str


@dataclass(frozen=True)
class Receipt:
    """One receipt or slip, top to bottom.

    >>> paper = Receipt(shop_name="Harbour Market", time="2025-06-01 16:03 CEST",
    ...                 reference=("Order #3", "Kit kit-07"), link="http://10.42.0.1/r/1",
    ...                 banner="COPY", state="REFUNDED")
    >>> paper.banner, paper.lines
    ('COPY', ())
    """

    shop_name: str
    time: str
    reference: tuple[str, str]
    """The order's number (left) and the kit (right)."""
    link: str
    """The QR code's payload, printed as text under it as well."""
    banner: str = ""
    """Large white-on-black words above everything: ``COPY``, ``VOID``, ``NOT PAID``."""
    time_note: str = ""
    """A line under the time (the kit's clock was not set)."""
    lines: tuple[ReceiptLine, ...] = ()
    total: str = ""
    """The TOTAL row's amount; empty: no TOTAL row."""
    rows: tuple[tuple[str, str], ...] = ()
    """Label and value rows under the total (payment, an amount refunded)."""
    state: str = ""
    """Large words under the rows: the order as it stands (``PAID``, ``REFUNDED``)."""
    notes: tuple[str, ...] = ()
    """Sentences under the state, wrapped to the paper (a reason, what the slip is not)."""
    link_caption: str = ""
    """A line under the link (what scanning it shows)."""
    footer: tuple[str, ...] = ()
    """The shop's lines at the bottom, centred."""

    def __post_init__(self) -> None:
        if not 0 < len(self.link.encode("utf-8")) <= MAX_QR_CHARS:
            raise ValueError(f"a receipt's link must be 1 to {MAX_QR_CHARS} bytes, "
                             f"not {len(self.link.encode('utf-8'))}")


def receipt_columns(width_mm: int) -> int:
    """Characters per line for a paper width in millimetres.

    >>> receipt_columns(58), receipt_columns(80)
    (32, 48)
    """
    try:
        return COLUMNS_BY_WIDTH_MM[width_mm]
    except KeyError:
        raise ValueError(f"paper width must be one of {sorted(COLUMNS_BY_WIDTH_MM)} mm, "
                         f"not {width_mm!r}") from None


def qr_module_dots(payload: str, width_mm: int) -> int:
    """Dots per module for a QR code of ``payload`` that fits the paper, at most
    :data:`QR_MODULE_DOTS`.

    >>> qr_module_dots("ab" * 32, 58), qr_module_dots("x" * 190, 58)
    (6, 5)
    """
    size = len(payload.encode("utf-8"))
    version = next(v for v, holds in enumerate(_QR_BYTES_AT_M, 1) if holds >= size)
    modules = 17 + 4 * version + _QR_QUIET_MODULES
    return max(1, min(QR_MODULE_DOTS, DOTS_BY_WIDTH_MM[width_mm] // modules))


def render_receipt(printer: Escpos, receipt: Receipt, *, width_mm: int) -> None:
    """Lay out ``receipt`` on any python-escpos printer, ending with a cut.

    The banner (reversed, triple size), the shop's name (double size), the time, the order and
    kit, one row per line, the total, the rows, the state (double size), the notes, the link
    as a native QR code (GS ( k) and as text for when the code does not scan, the footer.
    """
    columns = receipt_columns(width_mm)
    rule = "-" * columns
    printer.hw("INIT")
    if receipt.banner:
        printer.set(align="center", bold=True, invert=True, custom_size=True, width=3,
                    height=3)
        _print_rows(printer, [f" {row} " for row in textwrap.wrap(receipt.banner,
                                                                  columns // 3 - 2)])
        printer.set(normal_textsize=True, invert=False, bold=False)
    printer.set(align="center", bold=True, double_width=True, double_height=True)
    _print_rows(printer, textwrap.wrap(receipt.shop_name, columns // 2))
    printer.set(normal_textsize=True, bold=False)
    _print_rows(printer, [receipt.time, *([receipt.time_note] if receipt.time_note else [])])
    printer.set(align="left")
    _print_rows(printer, [*_left_and_right(*receipt.reference, columns), rule])
    if receipt.lines:
        _print_rows(printer, [*(row for line in receipt.lines
                                for row in _line_rows(line, columns)), rule])
    if receipt.total:
        printer.set(bold=True, double_height=True)
        _print_rows(printer, _left_and_right("TOTAL", receipt.total, columns))
        printer.set(normal_textsize=True, bold=False)
    _print_rows(printer, [row for label, value in receipt.rows
                          for row in _left_and_right(label, value, columns)])
    printer.set(align="center")
    if receipt.state:
        printer.set(bold=True, double_width=True, double_height=True)
        _print_rows(printer, textwrap.wrap(receipt.state, columns // 2))
        printer.set(normal_textsize=True, bold=False)
    _print_rows(printer, [row for note in receipt.notes
                          for row in textwrap.wrap(note, columns)])
    printer.qr(receipt.link, ec=load_escpos().constants.QR_ECLEVEL_M,
               size=qr_module_dots(receipt.link, width_mm), native=True)
    _print_rows(printer, [*_chunks(receipt.link, columns),
                          *([receipt.link_caption] if receipt.link_caption else [])])
    if receipt.footer:
        _print_rows(printer, [rule, *(row for line in receipt.footer
                                      for row in textwrap.wrap(line, columns) or [""])])
    printer.cut()


def render_slip(printer: Escpos, rows: list[str], *, width_mm: int) -> None:
    """A slip that is not a receipt (a printer test): ``rows`` centred, each wrapped to the
    paper, then a cut."""
    columns = receipt_columns(width_mm)
    printer.hw("INIT")
    printer.set(align="center")
    _print_rows(printer, [wrapped for row in rows for wrapped in textwrap.wrap(row, columns)])
    printer.cut()


def _print_rows(printer: Escpos, rows: list[str]) -> None:
    if rows:
        printer.text("".join(f"{row}\n" for row in rows))


def _chunks(text: str, columns: int) -> list[str]:
    """A link cut into rows of the paper's width (a URL has no spaces to wrap at)."""
    return [text[start:start + columns] for start in range(0, len(text), columns)]


def _line_rows(line: ReceiptLine, columns: int) -> list[str]:
    quantity = f"{line.qty} x "
    return _left_and_right(quantity + line.name, line.amount, columns, indent=len(quantity))


def _left_and_right(left: str, right: str, columns: int, indent: int = 0) -> list[str]:
    """``right`` flush right on the first row; ``left`` wrapped beside it and below it. When
    ``right`` leaves too little room, ``left`` takes its own rows and ``right`` the next one
    (a row longer than the paper would be wrapped by the printer, anywhere).

    >>> _left_and_right("2 x Mint tea", "5.00", 20)
    ['2 x Mint tea    5.00']
    >>> _left_and_right("Copy printed at", "2025-06-01 16:03", 20)
    ['Copy printed at', '    2025-06-01 16:03']
    """
    left_width = columns - len(right) - 1
    if left_width >= columns // 2 or 0 < len(left) <= left_width:
        first, *rest = textwrap.wrap(left, left_width, subsequent_indent=" " * indent) or [""]
        return [f"{first:<{left_width}} {right}", *rest]
    return [*textwrap.wrap(left, columns, subsequent_indent=" " * indent),
            *(row.rjust(columns) for row in _chunks(right, columns))]
