"""Receipts that tell the truth, end to end: a ``dropkit sim`` on loopback prints through
python-escpos to its simulated printer; each paper's picture is read back with zbar
(``zbarimg``, Debian's zbar-tools), and the link its QR code holds is opened on the running kit.

The pictures are kept beside the test (``<tmp>/state0/printer/receipt-<n>.png``) and copied
to ``/tmp/dropkit-receipts/`` under the name of what they show, to be looked at.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from PIL import Image

from agent.ops.harness import EventStream, wait_for
from tests import needs
from tests.conftest import Kit

ZBARIMG = shutil.which("zbarimg")


@pytest.fixture(autouse=True)
def zbarimg_here() -> None:
    if ZBARIMG is None:
        needs.missing("zbarimg", "zbar-tools")
KIT_ID, SHOP, ZONE = "kit-rcpt", "Harbour Market", "Europe/Berlin"
FOOTER = ("Harbour Market co-op, 12 Quay St", "Returns within 14 days with this receipt")
CONFIG = f'''
[kit]
id = "{KIT_ID}"

[printer]
status_interval_s = 0.2

[receipt]
shop_name = "{SHOP}"
currency = "EUR"
time_zone = "{ZONE}"
unpaid_slip = true
footer = """
{FOOTER[0]}
{FOOTER[1]}
"""
'''
SHOTS = Path("/tmp/dropkit-receipts")
BANNER_ROWS = 3 * 24  # the banner's characters are three Font A cells (24 dots) tall


def decode_qr(picture: Path) -> list[str]:
    """What zbar reads in a picture: one payload per QR code."""
    answer = subprocess.run([ZBARIMG, "--quiet", "--raw", "-Sdisable", "-Sqrcode.enable",
                             str(picture)], capture_output=True, text=True, timeout=60)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.splitlines()


def banner_rows(picture: Path) -> int:
    """How many dot rows at the top of the paper are mostly black across its middle: a
    white-on-black banner's height (none for a paper that starts with plain text)."""
    with Image.open(picture) as image:
        page = image.convert("L")
    middle = range(page.width // 3, 2 * page.width // 3)
    rows = 0
    for y in range(12, page.height):  # below the picture's top margin
        if sum(page.getpixel((x, y)) < 128 for x in middle) <= len(middle) // 2:
            break
        rows += 1
    return rows


def fetch(url: str, accept: str = "text/html,application/xhtml+xml,*/*;q=0.8"
          ) -> tuple[int, str]:
    """GET ``url`` as a phone's browser asks (HTML), or as another client with ``accept``."""
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode("utf-8")
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode("utf-8")


def local_time(iso_timestamp: str) -> str:
    """The kit's timestamp in Berlin, as a receipt prints it: ``2025-06-01 16:03 CEST``."""
    moment = datetime.fromisoformat(iso_timestamp).astimezone(ZoneInfo(ZONE))
    assert moment.tzname() in ("CET", "CEST")
    return moment.strftime("%Y-%m-%d %H:%M %Z")


class Papers:
    """The kit's printed papers, in the order they came out, as files and as print jobs."""

    def __init__(self, kit: Kit) -> None:
        self.kit, self.folder = kit, kit.state_dir / "printer"

    def jobs(self) -> list[tuple[str, str, str]]:
        db = self.kit.open_store()
        try:
            return [tuple(row) for row in db.execute(
                "SELECT order_id, kind, state FROM print_jobs ORDER BY id")]
        finally:
            db.close()

    def wait(self, count: int) -> None:
        """Until ``count`` jobs printed (a printed job's files are whole: the printer took
        the paper and answered a status query after it)."""
        wait_for(lambda: sum(state == "printed" for *_, state in self.jobs()) >= count, 20,
                 f"{count} papers printed")

    def text(self, n: int) -> list[str]:
        rows = (self.folder / f"receipt-{n}.txt").read_text(encoding="utf-8").splitlines()
        return [row for row in rows if not row.startswith("[QR] ")]

    def picture(self, n: int, name: str) -> Path:
        picture = self.folder / f"receipt-{n}.png"
        SHOTS.mkdir(exist_ok=True)
        shutil.copy(picture, SHOTS / f"{n}-{name}.png")
        return picture


def link(kit: Kit, seq: int, link_hash: str) -> str:
    """The kit's own page for a chain entry: where it serves, as a phone on loopback sees it."""
    return f"{kit.url}/r/{KIT_ID}/{seq}/{link_hash}"


def row_with(rows: list[str], left: str, right: str) -> bool:
    return any(row.startswith(left) and row.endswith(right) for row in rows)


def settle(kit: Kit, order_id: str, action: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = kit.request("POST", f"/api/staff/orders/{order_id}/{action}", body, staff=True)
    assert answer.status == 200, answer.data
    return answer.data


def test_each_paper_says_what_the_order_is_and_its_code_opens_the_kits_record(
        kit_factory: Any, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(CONFIG, encoding="utf-8")
    kit: Kit = kit_factory(config=config)
    papers = Papers(kit)

    def check_code(n: int, name: str, seq: int, link_hash: str, *words: str) -> str:
        """Paper ``n``'s code reads (zbar) as the kit's page for its entry, and that page
        shows the order: its number and state among ``words``."""
        [decoded] = decode_qr(papers.picture(n, name))
        assert decoded == link(kit, seq, link_hash)
        status, page = fetch(decoded)
        assert status == 200 and SHOP in page, page
        for word in words:
            assert word in page, (word, page)
        return decoded

    # A cash sale: its receipt, PAID, in local time, in euros, with the shop's footer.
    cash = kit.place([{"sku": "ZINE-07", "qty": 2}]).data
    papers.wait(1)
    rows = papers.text(1)
    assert rows[0] == SHOP and banner_rows(papers.folder / "receipt-1.png") == 0
    assert local_time(cash["created_at"]) in rows
    assert row_with(rows, f"Order #{cash['number']}", f"Kit {KIT_ID}")
    assert row_with(rows, "TOTAL", "EUR 16.00") and row_with(rows, "2 x Zine no. 7", "EUR 16.00")
    assert "PAID" in rows and rows[-2:] == list(FOOTER)
    check_code(1, "sale-paid", cash["receipt"]["seq"], cash["receipt"]["hash"],
               f"Order #{cash['number']}", "PAID", "EUR 16.00")

    # A card sale: a NOT PAID slip at once, and no receipt until staff confirm the payment.
    card = kit.place([{"sku": "TEE-BLK-M", "qty": 1}], method="card").data
    papers.wait(2)
    rows = papers.text(2)
    assert rows[:2] == [" NOT PAID ", SHOP]
    assert banner_rows(papers.folder / "receipt-2.png") >= BANNER_ROWS
    assert "PAID" not in rows and "not a receipt" in " ".join(rows)
    assert [kind for order, kind, _ in papers.jobs() if order == card["order_id"]] == ["unpaid"]
    check_code(2, "card-not-paid-slip", card["receipt"]["seq"], card["receipt"]["hash"],
               "NOT PAID")
    paid = settle(kit, card["order_id"], "payment", {"result": "paid"})
    assert paid["payment"]["status"] == "paid"
    papers.wait(3)
    rows = papers.text(3)
    assert rows[0] == SHOP and "PAID" in rows and row_with(rows, "Payment", "card")
    assert banner_rows(papers.folder / "receipt-3.png") == 0
    check_code(3, "card-paid", card["receipt"]["seq"], card["receipt"]["hash"], "PAID")

    # A card payment that failed, then voided: its NOT PAID slip, then a VOID slip; never a
    # receipt that looks like a sale.
    failed = kit.place([{"sku": "TEE-BLK-M", "qty": 1}], method="card").data
    papers.wait(4)
    settle(kit, failed["order_id"], "payment", {"result": "failed"})
    voided = settle(kit, failed["order_id"], "void", {"reason": "card declined"})
    papers.wait(5)
    rows = papers.text(5)
    assert rows[:2] == [" VOID ", SHOP] and "Reason: card declined" in rows
    assert banner_rows(papers.folder / "receipt-5.png") >= BANNER_ROWS
    assert row_with(rows, f"Order #{failed['number']}", f"Kit {KIT_ID}")
    assert row_with(rows, "Not charged", "EUR 25.00") and "PAID" not in rows
    db = kit.open_store()
    void_seq, void_hash = db.execute("SELECT seq, hash FROM receipts WHERE kind = 'void'"
                                     ).fetchone()
    db.close()
    assert voided["status"] == "voided"
    check_code(5, "void-slip", void_seq, void_hash, f"Order #{failed['number']}", "VOIDED")

    # The cash sale refunded: a REFUND slip; then a copy says COPY and REFUNDED, never paid.
    settle(kit, cash["order_id"], "refund", {"reason": "torn cover", "restock": True})
    papers.wait(6)
    rows = papers.text(6)
    assert rows[:2] == [" REFUND ", SHOP] and "Reason: torn cover" in rows
    assert row_with(rows, "Refunded", "EUR 16.00") and row_with(rows, "Paid by", "cash")
    db = kit.open_store()
    refund_seq, refund_hash = db.execute("SELECT seq, hash FROM receipts WHERE kind = 'refund'"
                                         ).fetchone()
    db.close()
    refund_link = check_code(6, "refund-slip", refund_seq, refund_hash, "REFUNDED")
    assert kit.request("POST", f"/api/staff/orders/{cash['order_id']}/reprint",
                       staff=True).status == 200
    papers.wait(7)
    rows = papers.text(7)
    assert rows[:2] == [" COPY ", SHOP] and "REFUNDED" in rows
    assert banner_rows(papers.folder / "receipt-7.png") >= BANNER_ROWS
    assert "PAID" not in rows and not any("(paid)" in row for row in rows)
    check_code(7, "copy-after-refund", cash["receipt"]["seq"], cash["receipt"]["hash"],
               "REFUNDED", f"Order #{cash['number']}")

    # The void and the refund took entries #4 and #5 of the chain; the next sale is order #4.
    after = kit.place([{"sku": "PIN-LOGO", "qty": 1}]).data
    assert (after["number"], after["receipt"]["seq"]) == (4, 6)
    papers.wait(8)
    assert row_with(papers.text(8), "Order #4", f"Kit {KIT_ID}")
    listed = kit.request("GET", "/api/orders?limit=10", staff=True).data["orders"]
    assert [order["number"] for order in listed] == [4, 3, 2, 1]

    # Every paper came from one job, once: nothing else printed.
    assert papers.jobs() == [
        (cash["order_id"], "receipt", "printed"), (card["order_id"], "unpaid", "printed"),
        (card["order_id"], "receipt", "printed"), (failed["order_id"], "unpaid", "printed"),
        (failed["order_id"], "void", "printed"), (cash["order_id"], "refund", "printed"),
        (cash["order_id"], "reprint", "printed"), (after["order_id"], "receipt", "printed")]
    assert len(list(papers.folder.glob("receipt-*.png"))) == 8

    # The kit's scanner reads a receipt's link (and an older receipt's bare hash) as its order.
    stream = EventStream(kit)
    try:
        for text in (refund_link, card["receipt"]["hash"].upper()):
            assert kit.request("POST", "/api/staff/sim/scan", {"text": text},
                               staff=True).status == 200
        wait_for(lambda: len([kind for kind, _ in stream.events if kind == "scan"]) == 2, 20,
                 "two scans")
    finally:
        stream.close()
    assert [data for kind, data in stream.events if kind == "scan"] == [
        {"kind": "receipt", "hash": refund_hash, "order_id": cash["order_id"]},
        {"kind": "receipt", "hash": card["receipt"]["hash"], "order_id": card["order_id"]}]


def test_the_receipt_page_answers_404_for_what_the_kit_did_not_record(kit: Kit) -> None:
    sale = kit.place([{"sku": "ZINE-07", "qty": 1}]).data
    seq, good, kit_id = sale["receipt"]["seq"], sale["receipt"]["hash"], kit.health()["kit_id"]
    status, record = fetch(f"{kit.url}/r/{kit_id}/{seq}/{good}", "application/json")
    assert status == 200
    assert {key: json.loads(record)[key] for key in ("recorded", "number", "state", "total")} \
        == {"recorded": True, "number": 1, "state": "PAID", "total": "EUR 8.00"}
    for path in (f"/r/{kit_id}/{seq}/{'0' * 64}",          # a hash the kit never made
                 f"/r/{kit_id}/{seq + 1}/{good}",           # the right hash, the wrong entry
                 f"/r/kit-other/{seq}/{good}",              # another kit's
                 f"/r/{kit_id}/99999999999999999999/{good}",  # beyond any entry
                 f"/r/{kit_id}/0/{good}", f"/r/{kit_id}/1/{good[:-1]}",
                 f"/r/{kit_id}/%C2%B2/{good}", f"/r/{'k' * 65}/1/{good}"):
        status, page = fetch(kit.url + path)
        assert status == 404, (path, status, page)
        assert re.search(r"Not recorded|not_found", page)
        status, answer = fetch(kit.url + path, "application/json")
        assert (status, json.loads(answer)["error"]) == (404, "not_found")
