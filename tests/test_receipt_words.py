"""What each paper says and when it prints: the ``[receipt]`` section, the print rules of
agent/core/printjobs.py on a real store, and each kind of paper printed through python-escpos to
the simulated printer, read back command by command."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import qrcode
from test_printing import (
    KIT_ID,
    KIT_NAME,
    KIT_URL,
    all_printed,
    jobs,
    link_of,
    looked_again,
    open_store,
    paper_words,
    receipts,
    running,
)

from agent import store as store_module
from agent.app.events import EventHub
from agent.config import ConfigError, PrintingConfig, ReceiptConfig, load_config, parse_config
from agent.core.clock import Moment, now_iso
from agent.core.manifest import Item, Manifest, apply_manifest
from agent.core.orders import OrderRequest, place_order, refund_order, settle_payment, void_order
from agent.core.printjobs import enqueue_reprint, queue_due
from agent.core.wording import Wording
from agent.fieldio.paper import PaperWords
from agent.fieldio.printing import PrintQueue
from agent.store import MIGRATIONS, Store
from hw.printer.receipt import DOTS_BY_WIDTH_MM, receipt_columns
from simulators.escpos_stream import Line, PrintModel, QrCode, Sheet, command_size
from simulators.printer import PrinterSimulator


async def sale(store: Store, method: str, *, unpaid_slip: bool = False) -> dict[str, Any]:
    """Sell one zine and queue its paper in the sale's transaction, as the kit does."""
    request = OrderRequest(str(uuid.uuid4()), (("ZINE-07", 1),), method)

    def sell(db: sqlite3.Connection) -> dict[str, Any]:
        view, _ = place_order(db, request, KIT_ID, "trace", Moment(now_iso(), 0.0))
        queue_due(db, view["order_id"], now_iso(), unpaid_slip=unpaid_slip)
        return view

    return await store.write(sell)


async def change(store: Store, rule: Any, *args: Any, unpaid_slip: bool = False
                 ) -> dict[str, Any]:
    """A void, refund or payment through the real rules, with its paper queued."""
    def write(db: sqlite3.Connection) -> dict[str, Any]:
        view = rule(db, *args)
        queue_due(db, view["order_id"], now_iso(), unpaid_slip=unpaid_slip)
        return view
    return await store.write(write)


def sheets(raw: bytes) -> list[Sheet]:
    """The printer's reading of ``raw``, command by command (the simulator's own model), on
    paper so wide that no row is wrapped: each row as the kit sent it."""
    model, data, found = PrintModel(columns=10_000), bytearray(raw), []
    while (size := command_size(data)) is not None:
        sheet = model.apply(bytes(data[:size]))
        del data[:size]
        found += [sheet] if sheet else []
    return found


# -- [receipt] --------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "message"), [
    ({"currency": "euro"}, "currency: expected an ISO 4217 code of three capital letters"),
    ({"time_zone": "Mars/Olympus"}, "time_zone: expected an IANA time zone name"),
    ({"time_zone": "../../etc/passwd"}, "time_zone: expected an IANA time zone name"),
    ({"verify_url": "https://coop.example/r/{seq}"}, "verify_url: expected an http(s) URL"),
    ({"verify_url": "https://coop.example/r/{order}/{hash}"}, "verify_url: expected"),
    ({"verify_url": "https://coop.example/r/{hash!r}"}, "verify_url: expected"),
    ({"verify_url": "ftp://coop.example/{hash}"}, "verify_url: expected"),
    ({"verify_url": "https://coop.example/{hash}/" + "x" * 120}, "verify_url: expected"),
    ({"verify_url": "https://coop.example/{hash"}, "verify_url: expected"),
    ({"footer": "\n".join(["line"] * 9)}, "footer: expected at most 8 lines"),
    ({"shop_name": "Two\nlines"}, "shop_name: expected a name of at most 64 characters"),
    ({"currency_symbol": "EURO"}, "currency_symbol: expected a symbol of at most 3"),
    ({"unpaid_slip": "yes"}, "unpaid_slip: expected true or false"),
])
def test_receipt_section_refuses_what_a_receipt_cannot_print(values: dict[str, Any],
                                                             message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"receipt": values}, "agent.toml")
    assert str(raised.value).startswith(f"agent.toml: [receipt] {message}"), raised.value


def test_the_printer_header_names_where_it_moved() -> None:
    with pytest.raises(ConfigError, match=r"\[printer\] header: moved to \[receipt\] shop_name"):
        parse_config({"printer": {"header": "Harbour Market"}}, "agent.toml")


def test_receipt_section_from_a_file_words_money_time_and_links(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text('[receipt]\nshop_name = "Harbour Market"\ncurrency = "GBP"\n'
                    'currency_symbol = "£"\ntime_zone = "America/New_York"\n'
                    'verify_url = "https://coop.example/r/{kit}/{seq}/{hash}"\n'
                    'footer = """\nCall 0161 496 0000\n  Returns: 14 days\n"""\n',
                    encoding="utf-8")
    receipt = load_config(path).receipt
    words = Wording(receipt)
    assert receipt.footer_lines == ("Call 0161 496 0000", "  Returns: 14 days")
    assert words.money(125050) == "£1250.50"
    assert Wording(ReceiptConfig()).money(-5) == "EUR -0.05"
    # Summer and winter in New York, against the tz database's own offsets.
    for stamp, zone in (("2025-07-01T16:30:00+00:00", "EDT"), ("2025-01-15T16:30:00+00:00",
                                                               "EST")):
        expected = datetime.fromisoformat(stamp).astimezone(ZoneInfo("America/New_York"))
        assert words.time(stamp) == expected.strftime("%Y-%m-%d %H:%M ") + zone
    assert receipt.link("kit-07", 12, "ab" * 32, kit_url="http://ignored/") == \
        f"https://coop.example/r/kit-07/12/{'ab' * 32}"
    assert ReceiptConfig().link("kit-07", 12, "ab" * 32, kit_url="http://10.42.0.1:8080/") == \
        f"http://10.42.0.1:8080/r/kit-07/12/{'ab' * 32}"


# -- when paper prints -------------------------------------------------------------------------

def test_a_card_sale_prints_nothing_until_paid_unless_asked_for_a_not_paid_slip(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await open_store(tmp_path / "kit.db")
        quiet = await sale(store, "card")  # the default: no slip for a pending card sale
        assert await jobs(store) == []
        slipped = await sale(store, "card", unpaid_slip=True)
        assert await jobs(store) == [(slipped["order_id"], "unpaid", "pending")]
        await change(store, settle_payment, quiet["order_id"], False, now_iso(),
                     unpaid_slip=True)
        assert len(await jobs(store)) == 1  # a failed payment prints nothing, not even a slip
        await change(store, void_order, quiet["order_id"], "declined", KIT_ID, now_iso())
        await change(store, settle_payment, slipped["order_id"], True, now_iso())
        await change(store, refund_order, slipped["order_id"], False, "", KIT_ID, now_iso())
        # Asked again (a retried request): nothing more.
        for order in (quiet, slipped):
            assert await store.write(lambda db, o=order: queue_due(
                db, o["order_id"], now_iso(), unpaid_slip=True)) == []
        assert await jobs(store) == [
            (slipped["order_id"], "unpaid", "dropped"), (quiet["order_id"], "void", "pending"),
            (slipped["order_id"], "receipt", "pending"),
            (slipped["order_id"], "refund", "pending")]
        note = await store.read(lambda db: db.execute(
            "SELECT note FROM print_jobs WHERE kind = 'unpaid'").fetchone()[0])
        assert note == "not printed: the order was paid before it could be"
        store.close()

    asyncio.run(scenario())


def test_a_slip_no_longer_true_is_not_printed_and_the_receipt_prints_once(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        with PrinterSimulator(port=0, paper_width_mm=58) as sim:
            config = PrintingConfig(port=sim.port, timeout_s=0.3, status_interval_s=0.2,
                                    width_mm=58)
            async with running(store, config, hub) as queue:
                sim.set_paper("out")
                await looked_again(queue)
                card = await sale(store, "card", unpaid_slip=True)
                queue.wake()
                await looked_again(queue)  # the slip waits for paper
                await change(store, settle_payment, card["order_id"], True, now_iso())
                sim.set_paper("ok")
                queue.wake()
                [printed] = await receipts(sim, 1)
                await all_printed(store)
                await looked_again(queue)  # a slip, were one coming, has printed by now
                assert len(sim.receipts) == 1
        store.close()
        assert printed.text.splitlines()[0] == KIT_NAME and "PAID" in printed.text.splitlines()
        assert printed.qr_payloads == [link_of(card)]

    asyncio.run(scenario())


def test_receipts_wait_until_the_kit_knows_where_it_serves(tmp_path: Path) -> None:
    async def scenario() -> None:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        served: list[str] = []
        words = PaperWords(KIT_NAME, KIT_ID, ReceiptConfig(), lambda seq, link_hash: (
            ReceiptConfig().link(KIT_ID, seq, link_hash, kit_url=served[0]) if served else None))
        with PrinterSimulator(port=0) as sim:
            config = PrintingConfig(port=sim.port, timeout_s=0.3, status_interval_s=0.2)
            queue = PrintQueue(store, config, words, on_event=hub.publish)
            queue_task = asyncio.create_task(queue.run())
            order = await sale(store, "cash")
            queue.wake()
            await looked_again(queue, 3)
            assert sim.receipts == [] and await jobs(store) == [
                (order["order_id"], "receipt", "pending")]
            served.append(KIT_URL)
            queue.wake()
            [printed] = await receipts(sim, 1)
            queue_task.cancel()
            await asyncio.gather(queue_task, return_exceptions=True)
        store.close()
        assert printed.qr_payloads == [link_of(order)]

    asyncio.run(scenario())


# -- what each paper looks like ----------------------------------------------------------------

@pytest.mark.parametrize("width_mm", [58, 80])
def test_each_kind_of_paper_fits_and_a_slip_says_what_it_is_in_large_reversed_type(
        tmp_path: Path, width_mm: int) -> None:
    receipt_config = ReceiptConfig(footer="Harbour Market co-op\nReturns within 14 days",
                                   time_zone="Europe/Berlin", currency_symbol="€")

    async def scenario() -> list[Sheet]:
        store, hub = await open_store(tmp_path / "kit.db"), EventHub()
        with PrinterSimulator(port=0, paper_width_mm=width_mm,
                              output_dir=tmp_path / "printer") as sim:
            config = PrintingConfig(port=sim.port, timeout_s=0.3, status_interval_s=0.2,
                                    width_mm=width_mm)
            queue = PrintQueue(store, config, paper_words(receipt_config), on_event=hub.publish)
            task = asyncio.create_task(queue.run())
            paid = await sale(store, "cash")
            card = await sale(store, "card", unpaid_slip=True)
            queue.wake()
            await receipts(sim, 2)  # printed before the void, which would drop the slip
            await change(store, void_order, card["order_id"], "card declined", KIT_ID,
                         now_iso())
            await change(store, refund_order, paid["order_id"], True,
                         "the cover was torn when we unpacked it", KIT_ID, now_iso())
            await store.write(lambda db: enqueue_reprint(db, paid["order_id"], now_iso()))
            queue.wake()
            printed = await receipts(sim, 5)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        store.close()
        return [sheet for paper in printed for sheet in sheets(paper.raw)]

    sale_, unpaid, void, refund, copy = asyncio.run(scenario())
    columns, dots = receipt_columns(width_mm), DOTS_BY_WIDTH_MM[width_mm]
    for sheet, banner in ((sale_, None), (unpaid, "NOT PAID"), (void, "VOID"),
                          (refund, "REFUND"), (copy, "COPY")):
        lines = [block for block in sheet.blocks if isinstance(block, Line)]
        assert max(sum(style.width * len(text) for style, text in line.runs)
                   for line in lines) <= columns  # nothing the printer would wrap
        [code] = [block for block in sheet.blocks if isinstance(block, QrCode)]
        symbol = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M)
        symbol.add_data(code.payload)
        symbol.make(fit=True)
        assert code.payload.startswith(KIT_URL)
        assert (symbol.modules_count + 8) * code.module_dots <= dots  # with its quiet zone
        first = lines[0]
        if banner is None:
            assert first.text == KIT_NAME and not first.runs[0][0].reverse
            continue
        [(style, text)] = first.runs
        assert (text.strip(), style.reverse, style.width, style.height, style.bold) == (
            banner, True, 3, 3, True)
        assert lines[1].text == KIT_NAME and not lines[1].runs[0][0].reverse
    texts = {name: sheet.text.splitlines() for name, sheet in
             (("sale", sale_), ("void", void), ("refund", refund), ("copy", copy))}
    assert any(row.endswith("€8.00") and row.startswith("TOTAL") for row in texts["sale"])
    assert any(row.endswith(("CET", "CEST")) for row in texts["sale"])
    assert "REFUNDED" in texts["copy"] and "PAID" not in texts["copy"]
    assert "Reason: card declined" in texts["void"]
    assert "the cover was torn when we unpacked it" in " ".join(texts["refund"])
    assert texts["sale"][-2:] == ["Harbour Market co-op", "Returns within 14 days"]


# -- the store ---------------------------------------------------------------------------------

def test_a_store_from_before_the_slips_keeps_its_jobs_and_numbers_its_orders(
        tmp_path: Path) -> None:
    db = store_module.connect(tmp_path / "old.db")
    for version, migration in enumerate(MIGRATIONS[:4], 1):  # as a kit before the slips left it
        db.executescript(migration + f";PRAGMA user_version={version}")
    # Sale #1, its void #2, sale #3: orders 1 and 2.
    for seq, kind, order_id in ((1, "sale", "ord-00000001"), (2, "void", "ord-00000001"),
                                (3, "sale", "ord-00000003")):
        db.execute("INSERT INTO receipts VALUES (?, ?, ?, '{}', ?, ?)",
                   (seq, kind, order_id, "0" * 64, f"{seq:064x}"))
        if kind == "sale":
            db.execute("INSERT INTO orders (order_id, seq, fingerprint, created_at, updated_at, "
                       "total_cents, payment_method, payment_status, status, trace_id) VALUES "
                       "(?, ?, 'f', 't', 't', 800, 'cash', 'paid', 'queued', 'x')",
                       (order_id, seq))
    db.execute("INSERT INTO print_jobs (order_id, kind, state, created_at, updated_at, note) "
               "VALUES ('ord-00000001', 'receipt', 'unsure', 't', 't', 'check it')")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO print_jobs (order_id, kind, created_at, updated_at) "
                   "VALUES ('ord-00000001', 'refund', 't', 't')")

    assert store_module.migrate(db) == len(MIGRATIONS)

    assert [tuple(row) for row in db.execute("SELECT * FROM print_jobs")] == [
        (1, "ord-00000001", "receipt", "unsure", "t", "t", "check it")]
    db.execute("INSERT INTO print_jobs (order_id, kind, created_at, updated_at) "
               "VALUES ('ord-00000001', 'refund', 't', 't')")
    assert {row[1] for row in db.execute("PRAGMA index_list(print_jobs)")} == {
        "print_jobs_waiting", "print_jobs_by_order"}  # migration 7's index of the jobs not done
    apply_manifest(db, Manifest("m-1", (Item("ZINE-07", "Zine no. 7", 800, 5),)), "t",
                   now_iso())
    place_order(db, OrderRequest("ord-00000004", (("ZINE-07", 1),), "cash"), KIT_ID, "t",
                Moment(now_iso(), 0.0))
    assert [tuple(row) for row in db.execute("SELECT seq, number FROM orders ORDER BY seq")] \
        == [(1, 1), (3, 2), (4, 3)]
    db.close()
