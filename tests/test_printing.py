"""The print queue on a real store, printing over TCP to the ESC/POS printer simulator."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import sqlite3
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.app.events import Event, EventHub
from agent.config import ConfigError, PrintingConfig, ReceiptConfig, parse_config
from agent.core.clock import Moment, now_iso
from agent.core.errors import Refusal
from agent.core.manifest import Item, Manifest, apply_manifest
from agent.core.orders import OrderRequest, place_order
from agent.core.printjobs import (
    enqueue_reprint,
    enqueue_reprint_last,
    job_counts,
    jobs_to_check,
    mark_checked,
    queue_due,
)
from agent.core.wording import format_cents
from agent.fieldio.paper import PaperWords
from agent.fieldio.printing import PrintQueue
from agent.store import Store
from simulators.printer import PrintedReceipt, PrinterSimulator

KIT_ID, KIT_NAME = "kit-test", "Harbour Market"
KIT_URL = "http://kit.test:8080/"
MANIFEST = Manifest("test-1", (Item("ZINE-07", "Zine no. 7", 800, 50),
                               Item("PIN-LOGO", "Enamel pin", 600, 50),
                               Item("TEE-BLK-M", "Tee, black, M", 2500, 50)))
T = TypeVar("T")


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[PrinterSimulator]:
    with PrinterSimulator(port=0, output_dir=tmp_path / "printer") as simulator:
        yield simulator


@pytest.fixture
def printer_config(sim: PrinterSimulator) -> PrintingConfig:
    return PrintingConfig(port=sim.port, timeout_s=0.3, status_interval_s=0.2)


async def open_store(path: Path) -> Store:
    store = Store(path)
    store.open()
    await store.write(lambda db: apply_manifest(db, MANIFEST, "test", now_iso()))
    return store


async def sell(store: Store, *lines: tuple[str, int]) -> dict[str, Any]:
    """Place an order and queue its receipt in the sale's transaction, as the agent does."""
    request = OrderRequest(str(uuid.uuid4()), tuple(lines), "cash")

    def sale(db: sqlite3.Connection) -> dict[str, Any]:
        view, _ = place_order(db, request, KIT_ID, "trace", Moment(now_iso(), 0.0))
        queue_due(db, view["order_id"], now_iso())
        return view

    return await store.write(sale)


async def jobs(store: Store) -> list[tuple[str, str, str]]:
    return await store.read(lambda db: [
        (row["order_id"], row["kind"], row["state"])
        for row in db.execute("SELECT order_id, kind, state FROM print_jobs ORDER BY id")])


async def eventually(probe: Callable[[], T | Awaitable[T]], timeout: float = 5.0) -> T:
    """The probe's first truthy answer (awaited if need be); AssertionError after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        answer = probe()
        if inspect.isawaitable(answer):
            answer = await answer
        if answer:
            return answer
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)  # the polling interval, not a wait for anything


async def looked_again(queue: PrintQueue, times: int = 2) -> None:
    """Wait until the queue has asked the printer for its status ``times`` more times.

    Each turn of the queue's loop asks first, then prints what is pending: after two answers,
    a receipt that was coming (a retry, a second copy) has had its chance to print.
    """
    seen = queue.status["checked_at"]
    for _ in range(times):
        seen = await eventually(lambda before=seen: queue.status["checked_at"] != before
                                and queue.status["checked_at"])


async def all_printed(store: Store) -> None:
    await eventually(lambda: store.read(lambda db: job_counts(db)["waiting"] == 0))


async def next_event(events: asyncio.Queue[Event], kind: str, timeout: float = 5.0
                     ) -> dict[str, Any]:
    """The next event of ``kind`` (earlier events of other kinds are passed over)."""
    async with asyncio.timeout(timeout):
        while True:
            event_kind, data = await events.get()
            if event_kind == kind:
                return data


def paper_words(config: ReceiptConfig | None = None) -> PaperWords:
    """The words of a kit serving at :data:`KIT_URL`, as the agent builds them."""
    receipt = config or ReceiptConfig()
    return PaperWords(shop_name=KIT_NAME, kit_id=KIT_ID, config=receipt,
                      link=lambda seq, hash: receipt.link(KIT_ID, seq, hash, kit_url=KIT_URL))


def link_of(order: dict[str, Any]) -> str:
    """The link a sale's receipt holds in its QR code."""
    return f"{KIT_URL}r/{KIT_ID}/{order['receipt']['seq']}/{order['receipt']['hash']}"


@contextlib.asynccontextmanager
async def running(store: Store, config: PrintingConfig, hub: EventHub
                  ) -> AsyncIterator[PrintQueue]:
    queue = PrintQueue(store, config, paper_words(), on_event=hub.publish)
    task = asyncio.create_task(queue.run())
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def receipts(sim: PrinterSimulator, count: int) -> list[PrintedReceipt]:
    return await asyncio.to_thread(sim.wait_for_receipts, count)


def test_printed_receipt_decodes_back_to_the_order(
        tmp_path: Path, sim: PrinterSimulator, printer_config: PrintingConfig) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        order = await sell(store, ("ZINE-07", 2), ("TEE-BLK-M", 1))
        with hub.listen() as events:
            async with running(store, printer_config, hub):
                [printed] = await receipts(sim, 1)
                job = await next_event(events, "print_job")
        store.close()

        rows = printed.text.splitlines()
        assert rows[0] == KIT_NAME
        for line in order["lines"]:
            assert any(row.startswith(f"{line['qty']} x {line['name']}")
                       and row.endswith(format_cents(line["amount_cents"])) for row in rows)
        assert any(row.startswith("TOTAL") and row.endswith("EUR 41.00") for row in rows)
        assert order["total_cents"] == 4100
        assert any(row.startswith(f"Order #{order['number']}") and row.endswith(f"Kit {KIT_ID}")
                   for row in rows)
        assert "PAID" in rows
        assert printed.qr_payloads == [link_of(order)]
        assert (job["order_id"], job["kind"], job["state"]) == (order["order_id"], "receipt",
                                                                 "printed")

    asyncio.run(scenario())


def test_paper_out_holds_the_queue_and_each_receipt_prints_once(
        tmp_path: Path, sim: PrinterSimulator, printer_config: PrintingConfig) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        with hub.listen() as events:
            async with running(store, printer_config, hub) as queue:
                first = await sell(store, ("ZINE-07", 1))
                queue.wake()
                await receipts(sim, 1)
                await all_printed(store)
                assert await store.write(lambda db: queue_due(  # a retried sale
                    db, first["order_id"], now_iso())) == []
                assert await jobs(store) == [(first["order_id"], "receipt", "printed")]

                sim.set_paper("out")
                waiting = [await sell(store, ("PIN-LOGO", n)) for n in (1, 2, 3)]
                queue.wake()
                alert = await next_event(events, "paper_out")
                assert alert["state"] == "paper_out" and alert["paper"] == "out"
                assert queue.status["state"] == "paper_out"
                await looked_again(queue)  # it kept trying while the paper was out
                assert len(sim.receipts) == 1
                assert [state for *_, state in await jobs(store)] == ["printed"] + ["pending"] * 3

                sim.set_paper("ok")
                await next_event(events, "printer_ready")
                printed = await receipts(sim, 4)
                await all_printed(store)
                await looked_again(queue)  # time enough for a second copy, were one coming
        store.close()

        assert len(sim.receipts) == 4
        orders = [first, *waiting]
        assert [p.qr_payloads for p in printed] == [[link_of(o)] for o in orders]
        assert jobs_on_disk(tmp_path) == [(o["order_id"], "receipt", "printed")
                                             for o in orders]

    asyncio.run(scenario())


def jobs_on_disk(tmp_path: Path) -> list[tuple[str, str, str]]:
    """The jobs as a fresh connection sees them on disk, after the store closed."""
    db = sqlite3.connect(tmp_path / "kit.db")
    try:
        return [tuple(row) for row in db.execute(
            "SELECT order_id, kind, state FROM print_jobs ORDER BY id")]
    finally:
        db.close()


def test_a_silent_printer_is_never_taken_for_ready_and_nothing_is_marked_printed(
        tmp_path: Path, sim: PrinterSimulator, printer_config: PrintingConfig) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        sim.set_silent(True)
        order = await sell(store, ("ZINE-07", 1))
        with hub.listen() as events:
            async with running(store, printer_config, hub) as queue:
                alert = await next_event(events, "printer_offline")
                assert alert["state"] == "not_responding"
                assert (alert["responding"], alert["paper"]) == (False, "unknown")
                await looked_again(queue)  # it kept asking the silent printer
                assert await jobs(store) == [(order["order_id"], "receipt", "pending")]
                assert queue.status["paper"] == "unknown" and not queue.printer_ready

                sim.set_silent(False)
                await receipts(sim, 1)
                await all_printed(store)
        store.close()

        assert len(sim.receipts) == 1
        assert jobs_on_disk(tmp_path) == [(order["order_id"], "receipt", "printed")]

    asyncio.run(scenario())


class PaperEndsWithFirstReceipt(PrinterSimulator):
    """A printer whose roll runs out just as the first receipt is cut."""

    def _keep(self, sheet: Any) -> None:
        super()._keep(sheet)
        if len(self.receipts) == 1:
            self.set_paper("out")


def test_a_receipt_the_printer_stopped_on_is_flagged_not_printed_again(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        first = await sell(store, ("ZINE-07", 1))
        second = await sell(store, ("PIN-LOGO", 1))
        with (PaperEndsWithFirstReceipt(port=0) as sim, hub.listen() as events):
            config = PrintingConfig(port=sim.port, timeout_s=0.3, status_interval_s=0.2)
            async with running(store, config, hub) as queue:
                await next_event(events, "paper_out")
                flagged = await next_event(events, "print_job")
                assert (flagged["order_id"], flagged["state"]) == (first["order_id"], "unsure")
                assert "paper_out right after this receipt" in flagged["note"]

                sim.set_paper("ok")
                queue.wake()
                await all_printed(store)
                await looked_again(queue)  # a copy, were one coming, has printed by now
                assert [p.qr_payloads for p in sim.receipts] == [
                    [link_of(first)], [link_of(second)]]
        store.close()
        assert jobs_on_disk(tmp_path) == [(first["order_id"], "receipt", "unsure"),
                                          (second["order_id"], "receipt", "printed")]

    asyncio.run(scenario())


def test_reprint_prints_a_copy_and_a_second_tap_while_waiting_adds_none(
        tmp_path: Path, sim: PrinterSimulator, printer_config: PrintingConfig) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        older = await sell(store, ("ZINE-07", 1))
        last = await sell(store, ("PIN-LOGO", 1))
        async with running(store, printer_config, hub) as queue:
            await receipts(sim, 2)
            await all_printed(store)

            sim.set_paper("out")
            await eventually(lambda: queue.status["state"] == "paper_out")
            copy = await store.write(lambda db: enqueue_reprint(db, older["order_id"], now_iso()))
            again = await store.write(lambda db: enqueue_reprint(db, older["order_id"],
                                                                 now_iso()))
            assert again == copy
            await store.write(lambda db: enqueue_reprint_last(db, now_iso()))
            sim.set_paper("ok")
            queue.wake()
            printed = await receipts(sim, 4)
            await all_printed(store)
            await looked_again(queue)  # a copy, were one coming, has printed by now

            with pytest.raises(Refusal, match="no order"):
                await store.write(lambda db: enqueue_reprint(db, "no-such-order", now_iso()))
        store.close()

        assert len(sim.receipts) == 4
        copies = printed[2:]
        assert [p.qr_payloads for p in copies] == [[link_of(older)], [link_of(last)]]
        assert all(p.text.splitlines()[:2] == [" COPY ", KIT_NAME] for p in copies)
        assert [kind for _, kind, _ in jobs_on_disk(tmp_path)] == ["receipt", "receipt",
                                                                       "reprint", "reprint"]

    asyncio.run(scenario())


def test_a_new_queue_on_the_same_store_prints_nothing_twice(
        tmp_path: Path, sim: PrinterSimulator, printer_config: PrintingConfig) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        printed_order = await sell(store, ("ZINE-07", 1))
        async with running(store, printer_config, hub):
            await receipts(sim, 1)
            await all_printed(store)
        # Two crashes between "sending" and "printed": each job was on its way to the printer.
        cut_short = [await sell(store, ("PIN-LOGO", n)) for n in (1, 2)]
        await store.write(lambda db: db.execute(
            "UPDATE print_jobs SET state = 'sending' WHERE order_id != ?",
            (printed_order["order_id"],)))
        store.close()

        store = await open_store(tmp_path / "kit.db")
        with hub.listen() as events:
            async with running(store, printer_config, hub) as queue:
                flagged = [await next_event(events, "print_job") for _ in cut_short]
                assert [(job["order_id"], job["state"]) for job in flagged] == [
                    (order["order_id"], "unsure") for order in cut_short]
                assert all("check whether it printed" in job["note"] for job in flagged)
                await eventually(lambda: queue.printer_ready)
                await looked_again(queue)  # ready, and it still sends nothing flagged
                assert len(sim.receipts) == 1
                assert await store.read(job_counts) == {"waiting": 0, "unsure": 2}
                assert [job["id"] for job in await store.read(jobs_to_check)] == [
                    job["id"] for job in flagged]

                # Staff answer each: "it did print", or a copy (which settles the flag).
                checked, copied = flagged
                assert await store.write(lambda db: mark_checked(db, checked["id"], now_iso()))
                await store.write(lambda db: enqueue_reprint(db, copied["order_id"], now_iso()))
                assert not await store.write(lambda db: mark_checked(db, copied["id"],
                                                                     now_iso()))
                queue.wake()
                [_, copy] = await receipts(sim, 2)
                await all_printed(store)
                await looked_again(queue)  # a copy, were one coming, has printed by now
        store.close()

        assert len(sim.receipts) == 2
        assert copy.qr_payloads == [link_of(cut_short[1])]
        assert jobs_on_disk(tmp_path) == [
            (printed_order["order_id"], "receipt", "printed"),
            (cut_short[0]["order_id"], "receipt", "checked"),
            (cut_short[1]["order_id"], "receipt", "checked"),
            (cut_short[1]["order_id"], "reprint", "printed")]

    asyncio.run(scenario())


def test_printer_section_is_checked_like_every_other_section() -> None:
    parsed = parse_config({"printer": {
        "kind": "usb", "vendor_id": 0x04B8, "product_id": 0x0202, "width_mm": 58,
        "status_interval_s": 2.5}}, "agent.toml").printer

    assert parsed == replace(PrintingConfig(), kind="usb", vendor_id=0x04B8,
                             product_id=0x0202, width_mm=58, status_interval_s=2.5)
    assert parsed.driver_config().width_mm == 58
    for key, value, expected in [("width_mm", 76, "58 or 80"),
                                 ("kind", "bluetooth", "one of 'network', 'usb', 'serial'"),
                                 ("port", 70000, "an integer from 0 to 65535")]:
        with pytest.raises(ConfigError, match=f"agent.toml: \\[printer\\] {key}: expected "
                                              f"{expected}"):
            parse_config({"printer": {key: value}}, "agent.toml")


def test_disabled_printer_reports_so_and_the_queue_returns(tmp_path: Path) -> None:
    async def scenario() -> None:
        queue = PrintQueue(Store(tmp_path / "kit.db"), PrintingConfig(enabled=False),
                           paper_words(), on_event=EventHub().publish)
        await asyncio.wait_for(queue.run(), 1)
        assert queue.status == {"state": "disabled"}

    asyncio.run(scenario())
