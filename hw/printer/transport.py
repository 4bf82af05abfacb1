"""The printer's connection, its real-time status (DLE EOT) and printing a receipt (or a
slip that is not one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from hw.printer.library import load_escpos
from hw.printer.receipt import Receipt, receipt_columns, render_receipt, render_slip

if TYPE_CHECKING:
    from escpos.escpos import Escpos

PrinterKind = Literal["network", "usb", "serial"]
PaperLevel = Literal["ok", "near_end", "out", "unknown"]


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
class PrinterConfig:
    """Where the receipt printer is and how to reach it (the ``[printer]`` config section).

    ``kind`` picks the transport: ``host``/``port`` for network, ``vendor_id``/``product_id``
    for USB, ``device``/``baudrate`` for serial. ``profile`` names a python-escpos printer
    profile (``"TM-T88III"``, ``"default"``, ...). ``timeout_s`` bounds every network or serial
    operation, so a status query to a silent printer gives up after it.

    Every value is given: the kit's defaults are the agent's (``agent.config.PrintingConfig``).

    >>> PrinterConfig(kind="usb", host="", port=0, vendor_id=0x04B8, product_id=0x0202,
    ...               device="", baudrate=9600, profile="default", width_mm=58,
    ...               timeout_s=2.0).width_mm
    58
    """

    kind: PrinterKind
    host: str
    port: int
    vendor_id: int
    product_id: int
    device: str
    baudrate: int
    profile: str
    width_mm: int
    timeout_s: float

    def __post_init__(self) -> None:
        if self.kind not in get_args(PrinterKind):
            raise ValueError(f"printer kind must be one of {get_args(PrinterKind)}, "
                             f"not {self.kind!r}")
        receipt_columns(self.width_mm)


def printer_from_config(config: PrinterConfig, *, cache_dir: Path | None = None) -> Escpos:
    """A python-escpos ``Network``, ``Usb`` or ``Serial`` printer; it connects on first use.

    ``cache_dir`` is where python-escpos keeps its capabilities pickle (default
    ``~/.cache/dropkit/escpos``); it only counts on the first import of python-escpos in the
    process, and ``$ESCPOS_CAPABILITIES_PICKLE_DIR`` wins over it.
    """
    printers = load_escpos(cache_dir).printer
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


def query_status(printer: Escpos) -> PrinterStatus:
    """Ask the printer for its real-time status: DLE EOT 1 (printer), 2 (offline cause) and
    4 (paper roll sensor).

    A printer that does not answer within its transport's timeout, or answers something that
    is not a status byte, is :data:`NOT_RESPONDING`; its connection is then closed, so that a
    late answer is never read as the reply to a later query.
    """
    constants = load_escpos().constants
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


def print_receipt(printer: Escpos, receipt: Receipt, *, width_mm: int) -> int:
    """Print ``receipt`` in one write and return the number of ESC/POS bytes sent.

    Asks for the status first and raises :class:`PrinterNotReady` without sending anything
    when the printer is silent, offline, out of paper or has its cover open. Raises
    :class:`PrinterError` when the connection fails while sending (part of the receipt may
    have printed).
    """
    return _print(printer, lambda job: render_receipt(job, receipt, width_mm=width_mm))


def print_slip(printer: Escpos, rows: list[str], *, width_mm: int) -> int:
    """Print a slip of ``rows`` (:func:`hw.printer.receipt.render_slip`) as
    :func:`print_receipt` prints a receipt: the same checks, the same errors."""
    return _print(printer, lambda job: render_slip(job, rows, width_mm=width_mm))


def _print(printer: Escpos, render: Callable[[Escpos], None]) -> int:
    status = query_status(printer)
    if not status.ready:
        raise PrinterNotReady(status)
    job = _job_buffer(printer)
    render(job)
    try:
        printer._raw(job.output)
    except (OSError, load_escpos().exceptions.Error) as failure:
        _reset_connection(printer)
        raise PrinterError(f"sending the receipt failed: {failure}") from failure
    return len(job.output)


def _job_buffer(printer: Escpos) -> Any:
    """A python-escpos ``Dummy`` with ``printer``'s profile, to build a job in memory."""
    library = load_escpos()
    job = library.printer.Dummy()
    job.profile = printer.profile
    job.magic = library.magicencode.MagicEncode(job)
    return job


def _status_byte(printer: Escpos, request: bytes) -> int | None:
    """The printer's one-byte answer to a DLE EOT request, or None without a valid answer."""
    try:
        answer = bytes(printer.query_status(request))
    except (OSError, load_escpos().exceptions.Error):
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
