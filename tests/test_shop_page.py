"""The customers' shop (/) on a phone and the till (/till) on a tablet, in a real headless
Chromium against the real daemon: reserve, lose the Wi-Fi, reload, pay at the stall."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.ops.harness import wait_for, write_config
from tests import needs
from tests.conftest import Kit
from tests.pages import PHONE, TABLET, browser, open_till, shot  # noqa: F401  (the fixture)

pytestmark = pytest.mark.browser


@pytest.fixture
def zbarimg() -> str:
    found = shutil.which("zbarimg")
    if found is None:
        needs.missing("zbarimg", "zbar-tools")
    return found


@pytest.fixture
def phone(browser) -> Iterator:  # noqa: F811
    context = browser.new_context(viewport=PHONE)
    yield context.new_page()
    context.close()


@pytest.fixture
def tablet(browser) -> Iterator:  # noqa: F811
    context = browser.new_context(viewport=TABLET)
    yield context.new_page()
    context.close()


def add(page, name: str, times: int = 1) -> None:
    for _ in range(times):
        page.get_by_role("button", name=f"Add {name}").click()


def item_left(page, sku: str, units: int) -> None:
    page.locator(f"#items li[data-sku='{sku}'][data-available='{units}']").wait_for(
        timeout=20000)


def holds_in_store(kit: Kit) -> list[tuple[str, str]]:
    db = kit.open_store()
    try:
        return [tuple(r) for r in db.execute("SELECT order_id, state FROM holds")]
    finally:
        db.close()


def decode_qr(zbarimg: str, image: Path) -> str:
    """What zbar (the scanner's own kind of decoder, not the project's code) reads."""
    out = subprocess.run([zbarimg, "--quiet", "--raw", str(image)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def unlock_till(page, kit: Kit) -> None:
    open_till(page, kit)  # its staff stream open: a scan from now on reaches it
    page.locator("#pickup-section").wait_for()


def record_net_words(page) -> None:
    """Keep every line the phone's network notice shows from now on in ``window.netWords``,
    however briefly (a manifest read that gets through clears it until the next failed try)."""
    page.evaluate("""() => {
      const net = document.getElementById("net");
      window.netWords = [];
      const seen = () => {
        if (!net.hidden && net.textContent) window.netWords.push(net.textContent);
      };
      seen();
      new MutationObserver(seen).observe(net, { attributes: true, childList: true,
                                                characterData: true, subtree: true });
    }""")


def test_a_reservation_survives_a_wifi_drop_and_a_reload_and_is_paid_by_a_scan(
        kit: Kit, phone, tablet, tmp_path: Path, zbarimg: str) -> None:
    phone.goto(kit.url + "/")
    add(phone, "Limited vinyl", 2)
    assert phone.locator("#total").inner_text().replace("\u00a0", " ") in ("€64.00", "64.00 €")
    # The Wi-Fi drops while the request is out: the kit gets it and decides, the phone hears
    # nothing back; then nothing gets through at all for a while.
    reached_kit: list[int] = []

    def lost(route) -> None:
        if not reached_kit:
            reached_kit.append(route.fetch().status)
        route.abort("internetdisconnected")

    phone.route("**/api/orders", lost)
    record_net_words(phone)
    phone.get_by_role("button", name="Reserve").click()
    phone.wait_for_function("window.netWords.some((words) => words.startsWith("
                            "'No answer from the kit: your reservation is kept'))")
    phone.locator("#tickets li[data-state=sending]").filter(has_text="Reserving").wait_for()
    assert reached_kit == [201]
    shot(phone, "shop-wifi-lost-phone")
    sent_id = phone.locator("#tickets li[data-state=sending]").get_attribute("data-order-id")
    phone.reload()
    phone.locator(f"#tickets li[data-state=sending][data-order-id='{sent_id}']").wait_for()
    phone.unroute("**/api/orders")
    ticket = phone.locator(f"#tickets li[data-state=held][data-order-id='{sent_id}']")
    ticket.wait_for(timeout=20000)
    assert holds_in_store(kit) == [(sent_id, "held")]  # one reservation, the one first sent
    code = ticket.locator(".code").inner_text()
    item_left(phone, "VINYL-LTD", 8)
    ticket.locator("img").wait_for()
    shot(phone, "shop-reserved-phone")
    # The page draws its tickets again each second (the countdown): an element screenshot
    # can lose its img midway, so the picture is where the img is, measured in one look.
    box = phone.evaluate("""(s) => {
      const img = document.querySelector(s);
      img.scrollIntoView({ block: "center" });
      const r = img.getBoundingClientRect();
      return { x: r.x, y: r.y, width: r.width, height: r.height };
    }""", f"#tickets li[data-order-id='{sent_id}'] img")
    phone.screenshot(path=str(tmp_path / "pickup-qr.png"), clip=box)
    scanned = decode_qr(zbarimg, tmp_path / "pickup-qr.png")
    assert scanned == f"PICKUP-{code}"

    # At the stall: the till's scanner reads the phone's QR and opens that reservation.
    unlock_till(tablet, kit)
    assert kit.request("POST", "/api/staff/sim/scan", {"text": scanned}, staff=True).status \
        == 200
    panel = tablet.locator(f"#pickup[data-order-id='{sent_id}'][data-state=held]")
    panel.wait_for(timeout=10000)
    assert code in panel.inner_text()
    shot(tablet, "till-pickup-scanned-tablet")
    db = kit.open_store()
    try:
        assert db.execute("SELECT count(*) FROM print_jobs").fetchone()[0] == 0
    finally:
        db.close()
    tablet.get_by_role("button", name="Paid card").click()
    tablet.locator(f"#pickup[data-order-id='{sent_id}'][data-state=paid]").wait_for()
    tablet.locator("#message").filter(has_text="paid (card): order #1").wait_for()
    shot(tablet, "till-pickup-paid-tablet")
    phone.locator(f"#tickets li[data-state=paid][data-order-id='{sent_id}']").filter(
        has_text="Paid: thank you! Receipt #1").wait_for(timeout=30000)  # looked at each 10 s
    shot(phone, "shop-paid-phone")

    def printed_once() -> bool:
        db = kit.open_store()
        try:
            jobs = db.execute("SELECT kind, state FROM print_jobs WHERE order_id = ?",
                              (sent_id,)).fetchall()
        finally:
            db.close()
        return [tuple(job) for job in jobs] == [("receipt", "printed")]
    wait_for(printed_once, 20, "the receipt printed once, after the payment")


@pytest.mark.parametrize("viewport", [PHONE, TABLET], ids=["phone", "tablet"])
def test_a_customer_cannot_mark_anything_paid(kit: Kit, browser,  # noqa: F811
                                              viewport: dict[str, int]) -> None:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    page.goto(kit.url + "/")
    add(page, "Tee, black, M")
    page.get_by_role("button", name="Reserve").click()
    ticket = page.locator("#tickets li[data-state=held]")
    ticket.wait_for()
    order_id = ticket.get_attribute("data-order-id")
    name = "phone" if viewport == PHONE else "tablet"
    shot(page, f"shop-held-{name}")
    # Nothing on the page pays, and its script never calls a staff endpoint.
    buttons = [b.inner_text() for b in page.get_by_role("button").all()]
    assert not any(word in b.lower() for b in buttons
                   for word in ("paid", "pay", "void", "refund", "reprint")), buttons
    assert "/api/staff" not in page.evaluate(
        "fetch('/static/shop.js').then((r) => r.text())")
    # What the page's own code could send from the customer's phone is refused.
    statuses = page.evaluate("""async (id) => {
        const post = (path, body) => fetch(path, {method: "POST",
            headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
        const answers = await Promise.all([
            post(`/api/staff/orders/${id}/payment`, {result: "paid", method: "cash"}),
            post(`/api/staff/orders/${id}/void`, {}),
            post(`/api/staff/orders/${id}/refund`, {}),
            post(`/api/staff/orders/${id}/reprint`, {}),
            post("/api/orders", {order_id: id, lines: [{sku: "TEE-BLK-M", qty: 1}],
                                 payment: {method: "cash", status: "paid"}})]);
        return answers.map((a) => a.status);
    }""", order_id)
    assert statuses == [401, 401, 401, 401, 422]
    assert kit.request("GET", f"/api/orders/{order_id}").data["payment"] == {
        "method": None, "status": "unpaid"}
    context.close()


def test_a_hold_runs_out_and_its_stock_is_back(kit_factory, phone, tmp_path: Path) -> None:
    kit = kit_factory(config=write_config(tmp_path / "agent.toml",
                                          {"orders": {"hold_minutes": 0.1}}))
    phone.goto(kit.url + "/")
    item_left(phone, "VINYL-LTD", 10)
    add(phone, "Limited vinyl", 3)
    phone.get_by_role("button", name="Reserve").click()
    phone.locator("#tickets li[data-state=held]").wait_for()
    item_left(phone, "VINYL-LTD", 7)
    phone.locator("#tickets li[data-state=expired]").filter(
        has_text="Your hold ran out: the items went back on sale.").wait_for(timeout=30000)
    item_left(phone, "VINYL-LTD", 10)
    shot(phone, "shop-hold-ran-out-phone")
    assert [state for _, state in holds_in_store(kit)] == ["expired"]


def test_limit_per_customer_refuses_the_second_phone_load(kit: Kit, phone) -> None:
    loaded = kit.request("PUT", "/api/staff/manifest", {"version": "limits", "items": [
        {"sku": "VINYL-LTD", "name": "Limited vinyl", "price_cents": 3200, "qty": 10,
         "limit_per_customer": 1},
        {"sku": "ZINE-07", "name": "Zine no. 7", "price_cents": 800, "qty": 120}]}, staff=True)
    assert loaded.status == 200, loaded.data
    phone.goto(kit.url + "/")
    add(phone, "Limited vinyl")
    assert phone.get_by_role("button", name="Add Limited vinyl").is_disabled()  # the limit
    phone.get_by_role("button", name="Reserve").click()
    phone.locator("#tickets li[data-state=held]").wait_for()
    for forget in (False, True):  # the page loaded again; then with its storage cleared
        if forget:
            phone.evaluate("localStorage.clear()")
        phone.reload()
        add(phone, "Limited vinyl")
        phone.get_by_role("button", name="Reserve").click()
        phone.locator("#message").filter(
            has_text="Sorry: Limited vinyl: at most 1 per customer; this phone has 1 reserved "
                     "already.").wait_for()
        phone.locator("#cart li").filter(has_text="1 × Limited vinyl").wait_for()  # rolled back
    shot(phone, "shop-limit-phone")
    assert len(holds_in_store(kit)) == 1


def test_the_drop_counts_down_then_tells_each_customer_whether_they_got_one(
        kit: Kit, browser) -> None:  # noqa: F811
    opens = datetime.now(UTC) + timedelta(seconds=6)
    assert kit.request("PUT", "/api/staff/manifest", {"version": "drop", "items": [
        {"sku": "DROP", "name": "Drop vinyl", "price_cents": 4000, "qty": 1,
         "opens_at": opens.isoformat()}]}, staff=True).status == 200
    phones = [browser.new_context(viewport=PHONE).new_page() for _ in range(2)]
    for page in phones:
        page.goto(kit.url + "/")
        page.locator("#items li[data-sku=DROP]").filter(has_text="On sale at").wait_for()
        add(page, "Drop vinyl")
        reserve = page.locator("#reserve")
        assert reserve.is_disabled() and "opens in" in reserve.inner_text()
    shot(phones[0], "shop-drop-countdown-phone")
    for page in phones:
        page.wait_for_function("!document.getElementById('reserve').disabled", timeout=20000)
    phones[0].locator("#reserve").click()
    phones[0].locator("#tickets li[data-state=held]").filter(has_text="You got it!").wait_for()
    phones[1].locator("#reserve").click()
    phones[1].locator("#message").filter(
        has_text="Sorry, you did not get Drop vinyl: it sold out before your request reached "
                 "the kit.").wait_for()
    phones[1].locator("#items li[data-sku=DROP]").filter(has_text="Sold out").wait_for()
    shot(phones[0], "shop-drop-won-phone")
    shot(phones[1], "shop-drop-lost-phone")


def test_staff_find_a_reservation_by_its_typed_code_and_take_cash(kit: Kit, tablet) -> None:
    order = kit.request("POST", "/api/orders", {"order_id": "typed-code-0001", "lines": [
        {"sku": "ZINE-07", "qty": 2}], "device": "phone-0001"}).data
    code = order["reservation"]["code"]
    unlock_till(tablet, kit)
    tablet.locator("#reservations li[data-order-id='typed-code-0001']").wait_for()
    tablet.locator("#pickup-code").fill("zzzzzz")
    tablet.get_by_role("button", name="Find").click()
    tablet.locator("#message").filter(has_text="no reservation with the code").wait_for()
    tablet.locator("#pickup-code").fill(f"{code[:3].lower()} {code[3:].lower()}")
    tablet.get_by_role("button", name="Find").click()
    tablet.locator("#pickup[data-order-id='typed-code-0001'][data-state=held]").wait_for()
    shot(tablet, "till-pickup-typed-tablet")
    tablet.get_by_role("button", name="Paid cash").click()
    tablet.locator("#message").filter(has_text="paid (cash): order #1").wait_for()
    tablet.wait_for_function("document.querySelectorAll('#reservations li').length === 0")
    sale = kit.request("GET", "/api/orders/typed-code-0001").data
    assert sale["payment"] == {"method": "cash", "status": "paid"}
    assert sale["receipt"]["seq"] == 1
