"""Receipt printers over python-escpos: receipt layout, printing and real-time status.

Facts and effects only. :func:`print_receipt` prints one receipt or says why it did not;
:func:`query_status` reports what the printer says about itself (DLE EOT). Queueing, retries and
alerts are the agent's business. Every call blocks on the printer: run it off the event loop,
and use a printer object from one thread at a time.

python-escpos is imported on first use, with its import side effects kept in check: its
capabilities pickle goes to a fixed cache directory, no temporary directory is left behind
(python-escpos 3.1 makes one on import even when told where the pickle goes), and neither its
import-time ``logging.basicConfig()`` nor its transports' ``logging.info()`` calls configure the
root logger (the transports log to the ``escpos.printer`` logger instead).

Example::

    config = PrinterConfig(kind="network", host="192.168.4.50", width_mm=80)
    printer = printer_from_config(config)
    try:
        sent = print_receipt(printer, Receipt.from_dict(payload), width_mm=config.width_mm)
    except PrinterNotReady as refused:
        ...  # refused.status says why: silent, offline, cover open, paper out
    finally:
        printer.close()
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import tempfile
import textwrap
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal, get_args

if TYPE_CHECKING:
    from escpos.escpos import Escpos

PrinterKind = Literal["network", "usb", "serial"]
PaperLevel = Literal["ok", "near_end", "out", "unknown"]

COLUMNS_BY_WIDTH_MM = {58: 32, 80: 48}
"""Characters per line in Font A for each paper width."""
DEFAULT_ESCPOS_CACHE_DIR = Path("~/.cache/dropkit/escpos")
"""Where python-escpos keeps its capabilities pickle unless told otherwise."""
QR_MODULE_DOTS = 6
"""Dots per QR module: a 64-character hash (version 5, level M) is about 28 mm wide."""

_ESCPOS_PICKLE_DIR_ENV = "ESCPOS_CAPABILITIES_PICKLE_DIR"
_ESCPOS_IMPORT_LOCK = threading.Lock()
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Every DLE EOT answer has bits 0 and 7 clear and bits 1 and 4 set (Epson ESC/POS reference).
_STATUS_FIXED_BITS_MASK = 0b1001_0011
_STATUS_FIXED_BITS = 0b0001_0010
_OFFLINE_CAUSE_REQUEST = b"\x02"  # DLE EOT 2: offline cause status
_COVER_OPEN_BIT = 0b0000_0100  # DLE EOT 2, bit 2
_PAPER_END_STOP_BIT = 0b0010_0000  # DLE EOT 2, bit 5: printing stopped at the paper end


class PrinterError(Exception):
    """The printer could not be reached or the receipt could not be sent."""


class PrinterNotReady(PrinterError):
    """The printer said (or by its silence showed) that it cannot print; nothing was sent."""

    def __init__(self, status: PrinterStatus) -> None:
        super().__init__(f"printer not ready: {status}")
        self.status = status


@dataclass(frozen=True)
class PrinterStatus:
    """What the printer reported about itself.

    ``paper`` is ``"unknown"`` (and ``online`` and ``cover_open`` are False) when the printer
    did not answer: a silent printer is never reported as having paper.
    """

    online: bool
    paper: PaperLevel
    cover_open: bool
    responding: bool

    @property
    def ready(self) -> bool:
        """True when a receipt sent now would print."""
        return self.responding and self.online and not self.cover_open and self.paper != "out"


NOT_RESPONDING = PrinterStatus(online=False, paper="unknown", cover_open=False, responding=False)


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
        )


@dataclass(frozen=True)
class PrinterConfig:
    """Where the receipt printer is and how to reach it (the ``[printer]`` config section).

    ``kind`` picks the transport: ``host``/``port`` for network, ``vendor_id``/``product_id``
    for USB, ``device``/``baudrate`` for serial. ``profile`` names a python-escpos printer
    profile (``"TM-T88III"``, ``"default"``, ...). ``timeout_s`` bounds every network or serial
    operation, so a status query to a silent printer gives up after it.

    >>> PrinterConfig(kind="usb", vendor_id=0x04B8, product_id=0x0202, width_mm=58).width_mm
    58
    """

    kind: PrinterKind = "network"
    host: str = "127.0.0.1"
    port: int = 9100
    vendor_id: int = 0
    product_id: int = 0
    device: str = "/dev/ttyUSB0"
    baudrate: int = 9600
    profile: str = "default"
    width_mm: int = 80
    timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if self.kind not in get_args(PrinterKind):
            raise ValueError(f"printer kind must be one of {get_args(PrinterKind)}, "
                             f"not {self.kind!r}")
        receipt_columns(self.width_mm)


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


def printer_from_config(config: PrinterConfig, *, cache_dir: Path | None = None) -> Escpos:
    """A python-escpos ``Network``, ``Usb`` or ``Serial`` printer; it connects on first use.

    ``cache_dir`` is where python-escpos keeps its capabilities pickle (default
    ``~/.cache/dropkit/escpos``); it only counts on the first import of python-escpos in the
    process, and ``$ESCPOS_CAPABILITIES_PICKLE_DIR`` wins over it.
    """
    printers = _escpos(cache_dir).printer
    try:
        if config.kind == "network":
            return printers.Network(config.host, config.port, timeout=config.timeout_s,
                                    profile=config.profile)
        if config.kind == "usb":
            if not printers.Usb.is_usable():
                raise PrinterError("USB printers need pyusb: pip install 'python-escpos[usb]'")
            return printers.Usb(config.vendor_id, config.product_id,
                                timeout=round(config.timeout_s * 1000), profile=config.profile)
        return printers.Serial(config.device, config.baudrate, timeout=config.timeout_s,
                               profile=config.profile)
    except KeyError:
        raise ValueError(f"unknown python-escpos printer profile {config.profile!r}") from None


def render_receipt(printer: Escpos, receipt: Receipt, width_mm: int = 80,
                   header: str | None = None) -> None:
    """Lay out ``receipt`` on any python-escpos printer, ending with a cut.

    Header (``header``, by default the kit name), date and time, kit id and receipt number,
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
    _print_rows(printer, [_format_timestamp(receipt.created_at)])
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
    printer.qr(receipt.hash, ec=_escpos().constants.QR_ECLEVEL_M, size=QR_MODULE_DOTS,
               native=True)
    half = len(receipt.hash) // 2
    _print_rows(printer, [receipt.hash[:half], receipt.hash[half:]])
    printer.cut()


def query_status(printer: Escpos) -> PrinterStatus:
    """Ask the printer for its real-time status: DLE EOT 1 (printer), 2 (offline cause) and
    4 (paper roll sensor).

    A printer that does not answer within its transport's timeout, or answers something that
    is not a status byte, is :data:`NOT_RESPONDING`; its connection is then closed, so that a
    late answer is never read as the reply to a later query.
    """
    constants = _escpos().constants
    requests = (constants.RT_STATUS_ONLINE,
                constants.RT_STATUS + _OFFLINE_CAUSE_REQUEST,
                constants.RT_STATUS_PAPER)
    answers = []
    for request in requests:
        answer = _status_byte(printer, request)
        if answer is None:
            _reset_connection(printer)
            return NOT_RESPONDING
        answers.append(answer)
    printer_state, offline_cause, paper_sensor = answers

    paper: PaperLevel = "ok"
    if (paper_sensor & constants.RT_MASK_NOPAPER == constants.RT_MASK_NOPAPER
            or offline_cause & _PAPER_END_STOP_BIT):
        paper = "out"
    elif paper_sensor & constants.RT_MASK_LOWPAPER == constants.RT_MASK_LOWPAPER:
        paper = "near_end"
    return PrinterStatus(online=not printer_state & constants.RT_MASK_ONLINE, paper=paper,
                         cover_open=bool(offline_cause & _COVER_OPEN_BIT), responding=True)


def print_receipt(printer: Escpos, receipt: Receipt, *, width_mm: int = 80,
                  header: str | None = None) -> int:
    """Print ``receipt`` in one write and return the number of ESC/POS bytes sent.

    Asks for the status first and raises :class:`PrinterNotReady` without sending anything
    when the printer is silent, offline, out of paper or has its cover open. Raises
    :class:`PrinterError` when the connection fails while sending (part of the receipt may
    have printed).
    """
    status = query_status(printer)
    if not status.ready:
        raise PrinterNotReady(status)
    job = _job_buffer(printer)
    render_receipt(job, receipt, width_mm=width_mm, header=header)
    try:
        printer._raw(job.output)
    except (OSError, _escpos().exceptions.Error) as failure:
        _reset_connection(printer)
        raise PrinterError(f"sending the receipt failed: {failure}") from failure
    return len(job.output)


def _escpos(cache_dir: Path | None = None) -> ModuleType:
    """python-escpos, imported on first use without temporary directories or root logging."""
    os.environ.setdefault(_ESCPOS_PICKLE_DIR_ENV,
                          str(cache_dir or DEFAULT_ESCPOS_CACHE_DIR.expanduser()))
    return _import_escpos()


@functools.cache
def _import_escpos() -> ModuleType:
    Path(os.environ[_ESCPOS_PICKLE_DIR_ENV]).mkdir(parents=True, exist_ok=True)
    with (_ESCPOS_IMPORT_LOCK, _root_logger_left_unconfigured(),
          _empty_temporary_directories_removed()):
        import escpos.constants
        import escpos.exceptions
        import escpos.magicencode
        import escpos.printer
    # The transports call logging.info() and logging.error(), which configure the root logger
    # when it has no handler yet; a named logger takes the same calls without that side effect.
    transport_log = logging.getLogger("escpos.printer")
    for transport in (escpos.printer.network, escpos.printer.serial, escpos.printer.usb):
        transport.logging = transport_log
    return escpos


@contextlib.contextmanager
def _root_logger_left_unconfigured() -> Iterator[None]:
    """Make ``logging.basicConfig()`` a no-op for a moment (it skips a root with a handler)."""
    root = logging.getLogger()
    placeholder = logging.NullHandler()
    root.addHandler(placeholder)
    try:
        yield
    finally:
        root.removeHandler(placeholder)


@contextlib.contextmanager
def _empty_temporary_directories_removed() -> Iterator[None]:
    """Remove the empty directories that ``tempfile.mkdtemp()`` makes on this thread meanwhile.

    python-escpos 3.1 runs ``environ.get(PICKLE_DIR_VARIABLE, mkdtemp())`` on import, which
    makes a directory even when the variable is set, and never uses it.
    """
    real_mkdtemp = tempfile.mkdtemp
    this_thread = threading.get_ident()
    made: list[str] = []

    def recording_mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = real_mkdtemp(*args, **kwargs)
        if threading.get_ident() == this_thread:
            made.append(path)
        return path

    tempfile.mkdtemp = recording_mkdtemp
    try:
        yield
    finally:
        tempfile.mkdtemp = real_mkdtemp
        for path in made:
            with contextlib.suppress(OSError):  # not empty: not ours to remove
                os.rmdir(path)


def _job_buffer(printer: Escpos) -> Any:
    """A python-escpos ``Dummy`` with ``printer``'s profile, to build a job in memory."""
    escpos = _escpos()
    job = escpos.printer.Dummy()
    job.profile = printer.profile
    job.magic = escpos.magicencode.MagicEncode(job)
    return job


def _status_byte(printer: Escpos, request: bytes) -> int | None:
    """The printer's one-byte answer to a DLE EOT request, or None without a valid answer."""
    try:
        answer = bytes(printer.query_status(request))
    except (OSError, _escpos().exceptions.Error):
        return None
    if len(answer) != 1 or answer[0] & _STATUS_FIXED_BITS_MASK != _STATUS_FIXED_BITS:
        return None
    return answer[0]


def _reset_connection(printer: Escpos) -> None:
    """Close the transport so that the next use reconnects.

    python-escpos leaves a failed open as ``None``, which it never retries; ``False`` is what
    makes its ``device`` property open the connection again.
    """
    printer.close()
    printer.device = False


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
