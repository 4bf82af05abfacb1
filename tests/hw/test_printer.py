"""Receipt printer driver against the ESC/POS simulator, over real TCP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import pickle
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from agent.config import PrintingConfig
from agent.core.wording import UNSET_CLOCK, format_cents
from hw.printer.receipt import (
    MAX_QR_CHARS,
    Receipt,
    ReceiptLine,
    receipt_columns,
    render_receipt,
)
from hw.printer.transport import (
    NOT_RESPONDING,
    PrinterNotReady,
    PrinterStatus,
    print_receipt,
    printer_from_config,
    query_status,
)
from simulators.printer import PrinterSimulator

REPO = Path(__file__).resolve().parents[2]
ITEM_ROW = re.compile(r"(\d+) x (.+?) +(-?\d+\.\d\d)")
TOTAL_ROW = re.compile(r"TOTAL +(-?\d+\.\d\d)")
TYPICAL_LINES = [
    {"sku": "TEA-MINT", "name": "Mint tea", "qty": 2, "price_cents": 250},
    {"sku": "CAKE-LEMON", "name": "Lemon drizzle cake", "qty": 1, "price_cents": 375},
    {"sku": "BAG-TOTE", "name": "Tote bag", "qty": 1, "price_cents": 1200},
]


LINK = f"http://10.42.0.1:8080/r/kit-07/42/{hashlib.sha256(b'sale 42').hexdigest()}"


def make_receipt(lines: list[dict[str, Any]] = TYPICAL_LINES, number: int = 42,
                 **changes: Any) -> Receipt:
    """A sale's receipt worded as the agent words it (here by hand: the driver's tests)."""
    total = sum(line["qty"] * line["price_cents"] for line in lines)
    paper = {
        "shop_name": "Harbour Market",
        "time": "2025-06-01 14:03 UTC",
        "reference": (f"Order #{number}", "Kit kit-07"),
        "link": LINK,
        "lines": tuple(ReceiptLine(line["qty"], line["name"],
                                   format_cents(line["qty"] * line["price_cents"]))
                       for line in lines),
        "total": format_cents(total),
        "rows": (("Payment", "cash"),),
        "state": "PAID",
    }
    return Receipt(**{**paper, **changes})


@dataclass
class Rig:
    """A simulated printer and a python-escpos Network printer connected to it."""

    sim: PrinterSimulator
    printer: Any
    width_mm: int

    def print(self, receipt: Receipt) -> int:
        return print_receipt(self.printer, receipt, width_mm=self.width_mm)


@pytest.fixture(scope="session")
def escpos_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("escpos-cache")


@pytest.fixture
def rig_factory(tmp_path: Path, escpos_cache_dir: Path) -> Iterator[Callable[[int], Rig]]:
    rigs: list[Rig] = []

    def make(width_mm: int = 80) -> Rig:
        sim = PrinterSimulator(port=0, paper_width_mm=width_mm,
                               output_dir=tmp_path / "receipts").start()
        config = PrintingConfig(port=sim.port, width_mm=width_mm, timeout_s=0.3).driver_config()
        rigs.append(Rig(sim, printer_from_config(config, cache_dir=escpos_cache_dir), width_mm))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.printer.close()
        rig.sim.stop()


@pytest.fixture
def rig(rig_factory: Callable[[int], Rig]) -> Rig:
    return rig_factory(80)


@pytest.mark.parametrize("width_mm", [58, 80])
def test_printed_receipt_decodes_back_to_the_order(rig_factory: Callable[[int], Rig],
                                                   width_mm: int) -> None:
    rig = rig_factory(width_mm)
    receipt = make_receipt()

    sent = rig.print(receipt)

    [printed] = rig.sim.wait_for_receipts(1)
    rows = printed.text.splitlines()
    items = [match.groups() for row in rows if (match := ITEM_ROW.fullmatch(row))]
    assert items == [(str(line.qty), line.name, line.amount) for line in receipt.lines]
    [total] = [match[1] for row in rows if (match := TOTAL_ROW.fullmatch(row))]
    assert total == receipt.total == "20.75"
    assert printed.qr_payloads == [LINK]
    columns = receipt_columns(width_mm)
    assert "".join(rows[rows.index("PAID") + 1:]) == LINK  # the link under its code
    assert rows[0] == "Harbour Market"
    assert "2025-06-01 14:03 UTC" in rows and UNSET_CLOCK not in rows
    assert any(row.startswith("Order #42") and row.endswith("Kit kit-07") for row in rows)
    assert any(row.startswith("Payment") and row.endswith("cash") for row in rows)
    assert max(map(len, rows)) == columns
    assert sent == len(printed.raw)


def test_a_sale_made_before_the_clock_was_set_says_so_under_its_time(
        rig_factory: Callable[[int], Rig]) -> None:
    rig = rig_factory(58)
    rig.print(make_receipt(time_note=UNSET_CLOCK))
    rows = rig.sim.wait_for_receipts(1)[0].text.splitlines()
    assert rows[rows.index("2025-06-01 14:03 UTC") + 1] == "(kit clock was not set)"


def test_long_item_name_wraps_under_its_name_on_58_mm(rig_factory: Callable[[int], Rig]) -> None:
    rig = rig_factory(58)
    name = "Organic fair-trade cotton tote bag with a long name"
    rig.print(make_receipt([{"sku": "BAG", "name": name, "qty": 3, "price_cents": 1200}]))

    [printed] = rig.sim.wait_for_receipts(1)
    rows = printed.text.splitlines()
    first = next(index for index, row in enumerate(rows) if row.startswith("3 x "))
    assert rows[first].endswith(" 36.00")
    continued = [row for row in rows[first + 1:first + 3] if row.startswith("    ")]
    assert " ".join([rows[first][4:-6].strip(), *(row.strip() for row in continued)]) == name


@pytest.mark.parametrize(("fault", "expected"), [
    ({}, PrinterStatus(online=True, paper="ok", cover_open=False, responding=True)),
    ({"paper": "near_end"},
     PrinterStatus(online=True, paper="near_end", cover_open=False, responding=True)),
    ({"paper": "out"}, PrinterStatus(online=False, paper="out", cover_open=False, responding=True)),
    ({"cover_open": True},
     PrinterStatus(online=False, paper="ok", cover_open=True, responding=True)),
], ids=["ok", "near-end", "paper-out", "cover-open"])
def test_status_query_decodes_what_the_printer_answers(rig: Rig, fault: dict[str, Any],
                                                       expected: PrinterStatus) -> None:
    rig.sim.set_paper(fault.get("paper", "ok"))
    rig.sim.set_cover_open(fault.get("cover_open", False))

    status = query_status(rig.printer)

    assert status == expected
    assert status.ready == (expected.online and expected.paper != "out")


def test_silent_printer_is_not_responding_and_never_paper_ok(rig: Rig) -> None:
    rig.sim.set_silent(True)

    started = time.monotonic()
    status = query_status(rig.printer)

    assert status == NOT_RESPONDING
    assert (status.responding, status.paper, status.ready) == (False, "unknown", False)
    assert time.monotonic() - started < 2
    with pytest.raises(PrinterNotReady):
        rig.print(make_receipt())

    rig.sim.set_silent(False)
    assert query_status(rig.printer).responding  # a fresh connection, no late answers
    assert rig.sim.receipts == []


def test_print_is_refused_while_the_paper_is_out(rig: Rig) -> None:
    rig.sim.set_paper("out")

    with pytest.raises(PrinterNotReady) as refused:
        rig.print(make_receipt())

    assert refused.value.status.paper == "out"
    rig.sim.set_paper("ok")
    rig.print(make_receipt(number=43))
    [printed] = rig.sim.wait_for_receipts(1)
    assert "Order #43" in printed.text


def test_simulator_prints_nothing_sent_while_the_paper_is_out(rig: Rig) -> None:
    rig.sim.set_paper("out")
    render_receipt(rig.printer, make_receipt(number=1), width_mm=80)  # no status check first
    assert query_status(rig.printer).paper == "out"  # the job has been read by now

    rig.sim.set_paper("ok")
    rig.print(make_receipt(number=2))

    [printed] = rig.sim.wait_for_receipts(1)
    assert "Order #2" in printed.text and "Order #1" not in printed.text


def test_simulator_reassembles_commands_split_across_packets(rig: Rig) -> None:
    rig.print(make_receipt())
    [whole] = rig.sim.wait_for_receipts(1)

    with socket.create_connection(("127.0.0.1", rig.sim.port)) as connection:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(whole.raw), 7):
            connection.sendall(whole.raw[start:start + 7])
            time.sleep(0.001)
        [_, pieced] = rig.sim.wait_for_receipts(2)

    assert pieced == whole


@pytest.mark.parametrize("width_mm", [58, 80])
def test_typical_receipt_is_at_most_1_kb(rig_factory: Callable[[int], Rig], width_mm: int,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    rig = rig_factory(width_mm)

    sent = rig.print(make_receipt())

    with capsys.disabled():
        print(f"\n3-line receipt on {width_mm} mm: {sent} bytes of ESC/POS")
    assert sent <= 1024
    assert len(rig.sim.wait_for_receipts(1)[0].raw) == sent


def test_receipt_files_are_written_for_a_person_to_look_at(rig: Rig, tmp_path: Path) -> None:
    receipt = make_receipt()
    rig.print(receipt)
    rig.sim.wait_for_receipts(1)

    with Image.open(tmp_path / "receipts" / "receipt-1.png") as picture:
        picture.load()
        assert picture.width == 576 and picture.height > 400
    text = (tmp_path / "receipts" / "receipt-1.txt").read_text(encoding="utf-8")
    assert "Order #42" in text and f"[QR] {receipt.link}" in text


def test_receipt_refuses_a_link_its_code_cannot_hold() -> None:
    with pytest.raises(ValueError, match="link must be 1 to"):
        make_receipt(link="")
    with pytest.raises(ValueError, match="link must be 1 to"):
        make_receipt(link="http://kit/" + "é" * MAX_QR_CHARS)
    with pytest.raises(ValueError, match="paper width"):
        receipt_columns(76)


@given(st.integers(min_value=-10**9, max_value=10**9))
def test_format_cents_reads_back_as_the_same_amount(cents: int) -> None:
    assert Decimal(format_cents(cents)) * 100 == cents


def test_escpos_leaves_no_temp_dir_and_no_root_logging(tmp_path: Path) -> None:
    """python-escpos's import and its transports configure the root logger unless kept off
    it, and its capabilities pickle lands in a new temporary directory unless told where."""
    script = (
        "import logging, socket\n"
        "from agent.config import PrintingConfig\n"
        "from hw.printer.transport import printer_from_config, query_status\n"
        "listener = socket.create_server(('127.0.0.1', 0))  # accepts, never answers\n"
        "config = PrintingConfig(port=listener.getsockname()[1], timeout_s=0.1).driver_config()\n"
        "printer = printer_from_config(config)\n"
        "assert not query_status(printer).responding\n"
        "printer.close()\n"
        "assert logging.getLogger().handlers == [], logging.getLogger().handlers\n"
    )
    (tmp_path / "tmp").mkdir()
    env = {key: value for key, value in os.environ.items()
           if key != "ESCPOS_CAPABILITIES_PICKLE_DIR"}
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmp_path / "tmp"))

    subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True, timeout=60)

    assert list((tmp_path / "tmp").iterdir()) == []
    assert list((tmp_path / "home/.cache/dropkit/escpos").glob("*.capabilities.pickle"))


@pytest.mark.parametrize("left", [b"", b"\0" * 4096, b"\x80\x02}q\x00(X"],
                         ids=["empty", "zeros", "torn"])
def test_a_capabilities_pickle_a_power_cut_spoilt_is_made_again(tmp_path: Path,
                                                                  left: bytes) -> None:
    """python-escpos opens its pickle for writing before it has the data: a power cut soon
    after the kit's first start left it empty in the pulled-plug VM test, and every start's
    import failed on it (the printer part restarting for good)."""
    cache = tmp_path / "escpos"
    cache.mkdir()
    pickle_file = cache / f"{platform.python_version()}.capabilities.pickle"
    pickle_file.write_bytes(left)
    script = (
        "import pickle, sys\n"
        "from pathlib import Path\n"
        "from hw.printer.library import load_escpos\n"
        "escpos = load_escpos(Path(sys.argv[1]))\n"
        "from escpos.capabilities import CAPABILITIES\n"
        "assert CAPABILITIES['profiles'], 'no printer profiles'\n"
        "assert escpos.printer.Network\n"
    )
    env = {key: value for key, value in os.environ.items()
           if key != "ESCPOS_CAPABILITIES_PICKLE_DIR"}

    done = subprocess.run([sys.executable, "-c", script, str(cache)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "could not read its capabilities pickle" in done.stderr
    assert pickle.loads(pickle_file.read_bytes())["profiles"]
