"""A sale's receipt and its layout in ESC/POS, for any python-escpos printer."""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from hw.printer.library import load_escpos

if TYPE_CHECKING:
    from escpos.escpos import Escpos

COLUMNS_BY_WIDTH_MM = {58: 32, 80: 48}
"""Characters per line in Font A for each paper width."""
QR_MODULE_DOTS = 6
"""Dots per QR module: a 64-character hash (version 5, level M) is about 28 mm wide."""

UNSET_CLOCK = "(kit clock was not set)"
"""Printed under the time of a sale made before the kit's clock was set."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ReceiptLine:
    sku: str
    name: str
    qty: int
    price_cents: int

    @property
    def amount_cents(self) -> int:
        return self.qty * self.price_cents


@dataclass(frozen=True)
class Receipt:
    """One sale's receipt, as the agent hands it over.

    >>> receipt = Receipt.from_dict({
    ...     "kit_id": "kit-07", "kit_name": "Harbour Stall", "seq": 42, "hash": "ab" * 32,
    ...     "order_id": "6f1c", "created_at": "2025-06-01T14:03:22+00:00",
    ...     "lines": [{"sku": "TEA", "name": "Mint tea", "qty": 2, "price_cents": 250}],
    ...     "total_cents": 500, "payment": {"method": "cash", "status": "paid"}})
    >>> receipt.lines[0].amount_cents, receipt.payment_method
    (500, 'cash')
    """

    kit_id: str
    kit_name: str
    seq: int
    hash: str
    order_id: str
    created_at: str
    lines: tuple[ReceiptLine, ...]
    total_cents: int
    payment_method: str
    payment_status: str
    clock_synced: bool = True
    """Whether the kit's wall clock was set when it sold; if not, the time printed is marked."""

    def __post_init__(self) -> None:
        if not _SHA256_HEX.fullmatch(self.hash):
            raise ValueError(f"receipt hash must be 64 lowercase hex digits, not {self.hash!r}")
        datetime.fromisoformat(self.created_at)  # raises ValueError when it is not ISO 8601

    @classmethod
    def from_dict(cls, receipt: Mapping[str, Any]) -> Receipt:
        """Build a receipt from its JSON shape (``lines`` a list, ``payment`` an object)."""
        return cls(
            kit_id=receipt["kit_id"],
            kit_name=receipt["kit_name"],
            seq=receipt["seq"],
            hash=receipt["hash"],
            order_id=receipt["order_id"],
            created_at=receipt["created_at"],
            lines=tuple(
                ReceiptLine(line["sku"], line["name"], line["qty"], line["price_cents"])
                for line in receipt["lines"]
            ),
            total_cents=receipt["total_cents"],
            payment_method=receipt["payment"]["method"],
            payment_status=receipt["payment"]["status"],
            clock_synced=receipt.get("clock_synced", True),
        )


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


def format_cents(cents: int) -> str:
    """Money as printed on a receipt.

    >>> format_cents(1250), format_cents(5), format_cents(-1999)
    ('12.50', '0.05', '-19.99')
    """
    whole, fraction = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{whole}.{fraction:02d}"


def render_receipt(printer: Escpos, receipt: Receipt, *, width_mm: int,
                   header: str | None = None) -> None:
    """Lay out ``receipt`` on any python-escpos printer, ending with a cut.

    Header (``header``, by default the kit name), date and time (with :data:`UNSET_CLOCK`
    under it when the kit's clock was not set), kit id and receipt number,
    one row per line (``qty x name`` and its amount), total, payment, the receipt hash as a
    native QR code (GS ( k) and as text for when the code does not scan.
    """
    columns = receipt_columns(width_mm)
    rule = "-" * columns
    printer.hw("INIT")
    printer.set(align="center", bold=True, double_width=True, double_height=True)
    _print_rows(printer, textwrap.wrap(receipt.kit_name if header is None else header,
                                       columns // 2))
    printer.set(normal_textsize=True, bold=False)
    _print_rows(printer, [_format_timestamp(receipt.created_at),
                          *([] if receipt.clock_synced else [UNSET_CLOCK])])
    printer.set(align="left")
    _print_rows(printer, [
        *_left_and_right(f"Kit {receipt.kit_id}", f"Receipt #{receipt.seq}", columns),
        rule,
        *(row for line in receipt.lines for row in _line_rows(line, columns)),
        rule,
    ])
    printer.set(bold=True, double_height=True)
    _print_rows(printer, _left_and_right("TOTAL", format_cents(receipt.total_cents), columns))
    printer.set(normal_textsize=True, bold=False)
    _print_rows(printer, _left_and_right(
        "Payment", f"{receipt.payment_method} ({receipt.payment_status})", columns))
    printer.set(align="center")
    printer.qr(receipt.hash, ec=load_escpos().constants.QR_ECLEVEL_M, size=QR_MODULE_DOTS,
               native=True)
    half = len(receipt.hash) // 2
    _print_rows(printer, [receipt.hash[:half], receipt.hash[half:]])
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
    printer.text("".join(f"{row}\n" for row in rows))


def _format_timestamp(iso_timestamp: str) -> str:
    """``2025-06-01 14:03 UTC`` from ``2025-06-01T14:03:22+00:00``."""
    moment = datetime.fromisoformat(iso_timestamp)
    zone = moment.tzname()
    return moment.strftime("%Y-%m-%d %H:%M") + (f" {zone}" if zone else "")


def _line_rows(line: ReceiptLine, columns: int) -> list[str]:
    quantity = f"{line.qty} x "
    return _left_and_right(quantity + line.name, format_cents(line.amount_cents), columns,
                           indent=len(quantity))


def _left_and_right(left: str, right: str, columns: int, indent: int = 0) -> list[str]:
    """``right`` flush right on the first row; ``left`` wrapped beside it and below it.

    >>> _left_and_right("2 x Mint tea", "5.00", 20)
    ['2 x Mint tea    5.00']
    """
    left_width = max(columns - len(right) - 1, columns // 2)  # else the printer wraps the row
    first, *rest = textwrap.wrap(left, left_width, subsequent_indent=" " * indent) or [""]
    return [f"{first:<{left_width}} {right}", *rest]
