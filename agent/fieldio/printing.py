"""The print queue: each receipt and slip printed once, kept while the printer is away.

A print job is a row in the store, written in the same transaction as the change that calls
for it (:func:`agent.core.printjobs.queue_due`: a paid sale's receipt, a void or refund slip),
so a confirmed change always has its paper coming. :class:`PrintQueue` prints the pending jobs
in order, one at a time, on a single worker thread (python-escpos blocks), in the words of
:mod:`agent.fieldio.paper`, and watches the printer with DLE EOT status queries.

Once only: a job goes ``pending`` → ``sending`` (committed before a byte is sent) → ``printed``
(after the printer took the whole receipt and answered a status query behind it). A printer
that refuses (silent, offline, paper out, cover open) was sent nothing: the job stays
``pending`` and is tried again. Whenever it is not known whether the paper came out (the kit
stopped mid-send, the connection broke while sending, the printer fell silent or stopped
right after)
the job becomes ``unsure`` and is never printed again by itself: staff see it and reprint or
clear it. A missing receipt can be reprinted at a tap; a double one cannot be taken back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.backoff import Backoff
from agent.config import PrintingConfig
from agent.core import printjobs
from agent.core.clock import now_iso
from agent.core.errors import Refusal
from agent.fieldio.paper import PaperWords
from agent.store import Store
from hw.printer.receipt import Receipt
from hw.printer.transport import (
    NOT_RESPONDING,
    PrinterError,
    PrinterNotReady,
    PrinterStatus,
    print_receipt,
    print_slip,
    printer_from_config,
    query_status,
)

if TYPE_CHECKING:
    from escpos.escpos import Escpos

log = logging.getLogger(__name__)

EventSink = Callable[[str, dict[str, Any]], object]
"""Where the queue reports: ``(kind, data)``, as :meth:`agent.app.events.EventHub.publish` takes."""

FIRST_RETRY_S = 0.5
"""The first wait before trying a refusing printer again; it doubles up to the status interval."""

# The alert raised when the printer enters each state; "ready" ends the alert.
_ALERTS = {"paper_out": "paper_out", "paper_near_end": "paper_near_end",
           "cover_open": "cover_open", "offline": "printer_offline",
           "not_responding": "printer_offline", "ready": "printer_ready"}


# -- the queue ---------------------------------------------------------------------------------

def on_network_printer(base: PrintingConfig, host: str, port: int,
                       width_mm: int) -> PrintingConfig:
    """``base`` pointed at a network printer: ``dropkit sim``'s simulated one.

    >>> on_network_printer(PrintingConfig(kind="usb"), "127.0.0.1", 9101, 58).kind
    'network'
    """
    return dataclasses.replace(base, enabled=True, kind="network", host=host, port=port,
                               width_mm=width_mm)


def status_word(status: PrinterStatus | None) -> str:
    """One word for the printer's state, worst first; ``unknown`` before the first answer.

    >>> status_word(NOT_RESPONDING), status_word(None)
    ('not_responding', 'unknown')
    """
    if status is None:
        return "unknown"
    if not status.responding:
        return "not_responding"
    if status.cover_open:
        return "cover_open"
    if status.paper == "out":
        return "paper_out"
    if not status.online:
        return "offline"
    return "paper_near_end" if status.paper == "near_end" else "ready"


def printer_off() -> Refusal:
    """The refusal of a printer call on a kit whose printer is off or not running."""
    return Refusal("printer_disabled", "the kit has no receipt printer running "
                   "([printer] enabled)")


@dataclass(frozen=True)
class _Outcome:
    """What became of one send: ``printed``, ``refused`` (nothing sent) or ``unsure``."""

    result: str
    status: PrinterStatus
    note: str = ""


class PrintQueue:
    """Prints the store's pending jobs in order and keeps the printer's status.

    Reports through ``on_event(kind, data)`` (on the event loop):

    - ``printer`` with :attr:`status` whenever the printer's answer changes;
    - ``paper_out``, ``paper_near_end``, ``cover_open``, ``printer_offline`` (offline or not
      answering) when the printer enters that state, ``printer_ready`` when it recovers,
      each with :attr:`status`;
    - ``print_job`` with the job (``id``, ``order_id``, ``kind``, ``state``, ``note``, ...)
      when it is ``printed`` or becomes ``unsure``.
    """

    def __init__(self, store: Store, config: PrintingConfig, words: PaperWords, *,
                 on_event: EventSink) -> None:
        self.store, self.config, self.words = store, config, words
        self.on_event = on_event
        self._printer_status: PrinterStatus | None = None
        self._checked_at: str | None = None
        self._wakeup = asyncio.Event()
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._printer: Escpos | None = None
        self._sending: asyncio.Task[None] | None = None
        self._setup_error = ""
        self._unrecorded: tuple[int, _Outcome] | None = None
        self._interrupted_flagged = False  # jobs a previous run left ``sending`` are unsure
        self._store_refused = False

    @property
    def status(self) -> dict[str, Any]:
        """The printer as last seen, for ``/api/health`` and the staff page.

        ``state`` is ``disabled``, ``unknown`` (not asked yet) or :func:`status_word`'s
        answer. A printer that did not answer has ``paper`` ``unknown``, never ``ok``.
        """
        if not self.config.enabled:
            return {"state": "disabled"}
        status = self._printer_status or NOT_RESPONDING
        return {"state": status_word(self._printer_status), "online": status.online,
                "paper": status.paper, "cover_open": status.cover_open,
                "responding": status.responding, "checked_at": self._checked_at}

    @property
    def printer_ready(self) -> bool:
        """True when the printer's last answer said a receipt sent now would print."""
        return self._printer_status is not None and self._printer_status.ready

    def wake(self) -> None:
        """Look for new jobs now (call it once the transaction that queued one commits)."""
        self._wakeup.set()

    async def run(self) -> None:
        """Print until cancelled; returns at once when the printer is disabled.

        Jobs left ``sending`` by a previous run become ``unsure``. On cancellation a receipt
        being sent is finished and recorded first, so await the task before closing the store.
        """
        if not self.config.enabled:
            return
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="printer")
        interval = self.config.status_interval_s
        retry = Backoff(min(FIRST_RETRY_S, interval), interval)
        try:
            while True:
                self._wakeup.clear()
                caught_up = await self._unless_refused(self._catch_up)
                status = await self._in_worker(self._query_status)
                self._observe(status)
                if caught_up and status.ready and await self._unless_refused(self._print_pending):
                    delay = interval
                    retry.reset()
                else:  # the printer or the store is away: try again soon, then less often
                    delay = retry.next()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), delay)
        finally:
            if self._sending is not None:
                await asyncio.wait({self._sending})
            await self._in_worker(self._close_printer)
            self._worker.shutdown(wait=False)

    async def _catch_up(self) -> bool:
        """What the store must hear before anything is printed: the jobs a previous run left
        ``sending`` become ``unsure`` (once), and a send whose outcome could not be recorded
        is recorded."""
        if not self._interrupted_flagged:
            interrupted = await self.store.write(
                lambda db: printjobs.flag_interrupted_sends(db, now_iso()))
            self._interrupted_flagged = True
            for job in interrupted:
                log.warning("receipt job %d (order %s) may not have printed: %s",
                            job["id"], job["order_id"], job["note"])
                self.on_event("print_job", job)
        if self._unrecorded is not None:
            await self._record(*self._unrecorded)
        return True

    async def _unless_refused(self, step: Callable[[], Awaitable[bool]]) -> bool:
        """``step()``'s answer, or False when the store takes no writes (a full disk): then no
        job is sent, since none could be marked ``sending`` first."""
        try:
            answer = await step()
        except Refusal as refused:
            if not self._store_refused:
                log.warning("receipts wait: %s", refused.detail)
            self._store_refused = True
            return False
        self._store_refused = False
        return answer

    async def _print_pending(self) -> bool:
        """Print pending jobs in order: True once none is left, False when the printer stops.

        Each job runs as its own task, shielded: a cancelled queue finishes and records the
        receipt it is sending.
        """
        while (found := await self.store.read(printjobs.next_job)) is not None:
            job, order = found
            paper = self.words.paper(job["kind"], order, now_iso())
            if paper is None:  # its link is not known until the kit serves: wait for it
                return False
            self._sending = asyncio.create_task(self._print_job(job, paper))
            await asyncio.shield(self._sending)
            self._sending = None
            if not self.printer_ready:
                return False
        return True

    async def _print_job(self, job: dict[str, Any], paper: Receipt) -> None:
        if await self.store.write(lambda db: printjobs.move_job(
                db, job["id"], "pending", "sending", now_iso())) is None:
            return  # no longer pending: never send a job twice
        width = self.config.width_mm
        outcome = await self._in_worker(lambda: self._send(
            lambda printer: print_receipt(printer, paper, width_mm=width)))
        self._observe(outcome.status)
        if outcome.result == "unsure":
            log.warning("receipt job %d (order %s) may not have printed: %s",
                        job["id"], job["order_id"], outcome.note)
        self._unrecorded = (job["id"], outcome)
        await self._record(job["id"], outcome)

    async def _record(self, job_id: int, outcome: _Outcome) -> None:
        """Record what became of a send (kept in :attr:`_unrecorded` until it is)."""
        after = "pending" if outcome.result == "refused" else outcome.result
        moved = await self.store.write(lambda db: printjobs.move_job(
            db, job_id, "sending", after, now_iso(), outcome.note))
        self._unrecorded = None
        if moved is not None and outcome.result != "refused":
            self.on_event("print_job", moved)

    async def print_test_slip(self, rows: list[str]) -> dict[str, Any]:
        """Print a slip of ``rows`` now, between receipts (no job in the store: it sells
        nothing); what became of it, ``printed``, ``refused`` or ``unsure``, and the printer."""
        if not self.config.enabled or self._worker is None:
            raise printer_off()
        width = self.config.width_mm
        outcome = await self._in_worker(lambda: self._send(
            lambda printer: print_slip(printer, rows, width_mm=width)))
        self._observe(outcome.status)
        return {"result": outcome.result, "note": outcome.note, "printer": self.status}

    def _send(self, send: Callable[[Escpos], object]) -> _Outcome:
        """On the worker: print, then ask the printer whether it took the whole receipt."""
        printer = self._connected_printer()
        if printer is None:
            return _Outcome("refused", NOT_RESPONDING)
        try:
            send(printer)
        except PrinterNotReady as refused:
            return _Outcome("refused", refused.status)
        except PrinterError as failure:
            return _Outcome("unsure", NOT_RESPONDING, f"{failure}; check whether it printed")
        after = query_status(printer)
        if not after.ready:  # silent, or stopped (paper out, cover open) with the receipt
            return _Outcome("unsure", after, f"the printer was {status_word(after)} right "
                                             f"after this receipt; check whether it printed")
        return _Outcome("printed", after)

    def _query_status(self) -> PrinterStatus:
        printer = self._connected_printer()
        return NOT_RESPONDING if printer is None else query_status(printer)

    def _connected_printer(self) -> Escpos | None:
        """On the worker: the python-escpos printer, made on first use (it connects lazily)."""
        if self._printer is None:
            try:
                self._printer = printer_from_config(self.config.driver_config())
            except (PrinterError, ValueError) as failure:
                if str(failure) != self._setup_error:
                    log.error("receipt printer: %s", failure)
                    self._setup_error = str(failure)
                return None
        return self._printer

    def _close_printer(self) -> None:
        if self._printer is not None:
            with contextlib.suppress(OSError):  # a serial port unplugged meanwhile
                self._printer.close()
            self._printer = None

    async def _in_worker(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    def _observe(self, status: PrinterStatus) -> None:
        """Keep the latest answer; report a change, and an alert on entering a bad state."""
        before, self._printer_status = self._printer_status, status
        self._checked_at = now_iso()
        if status == before:
            return
        word, alert = status_word(status), _ALERTS[status_word(status)]
        log.log(logging.INFO if status.ready else logging.WARNING, "receipt printer: %s", word)
        self.on_event("printer", self.status)
        if alert != _ALERTS.get(status_word(before)) and not (before is None and word == "ready"):
            self.on_event(alert, self.status)
