"""What the till shows staff to check, in a real headless Chromium against the real daemon: an
alert that says what to do and goes when it is over, the receipts the kit is unsure were
printed (Reprint, Mark checked), and a scanned receipt or pickup code opening its order."""

from __future__ import annotations

from typing import Any

import pytest

from agent.ops.harness import wait_for
from tests.conftest import Kit
from tests.pages import PHONE, TABLET, VIEWPORTS, open_till, shot, viewport_name
from tests.pages import browser as browser  # the fixture
from tests.test_till_page import store
from tests.test_web_inprocess import store_exec

pytestmark = pytest.mark.browser


@VIEWPORTS
def test_an_alert_says_what_to_do_and_clears_when_it_is_over(
        kit: Kit, browser, viewport: dict[str, int]) -> None:
    page = browser.new_context(viewport=viewport).new_page()
    name = viewport_name(viewport)
    open_till(page, kit)
    printer, alerts = page.locator("#printer"), page.locator("#kit-status-alerts")
    printer.filter(has_text="Printer ready").wait_for(timeout=15000)
    page.get_by_role("button", name="Paper out").click()
    alert = alerts.locator("li[data-alert=printer_paper_out]")
    alert.filter(has_text="Printer is out of paper: put in a new roll; the receipts wait")\
        .wait_for(timeout=15000)
    assert printer.inner_text() == "Printer: out of paper"
    assert page.locator("#kit-status").get_attribute("class") == "kit-status degraded"
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    box = alert.bounding_box()  # the strip stays on screen, the alert with it
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]
    shot(page, f"till-paper-out-{name}")
    page.get_by_role("button", name="Paper in").click()
    printer.filter(has_text="Printer ready").wait_for(timeout=15000)
    alert.wait_for(state="detached", timeout=15000)
    assert alerts.locator("li").count() == 0
    assert page.locator("#alerts li").count() == 0  # no "paper out:" line left behind
    page.locator("#kit-status.ready").wait_for()
    shot(page, f"till-paper-back-{name}")


def job_states(kit: Kit) -> list[tuple[Any, ...]]:
    return store(kit, "SELECT o.number, j.kind, j.state FROM print_jobs j JOIN orders o "
                      "USING (order_id) ORDER BY j.id")


def test_receipts_the_kit_is_unsure_of_are_reprinted_or_marked_checked(
        kit_factory, browser) -> None:
    kit = kit_factory()
    # The paper is out: the two receipts wait; then the kit dies as if while sending them.
    assert kit.request("POST", "/api/staff/sim/paper", {"level": "out"}, staff=True).status == 200
    wait_for(lambda: "printer_paper_out" in kit.health()["alerts"], 15, "the paper is out")
    for sku in ("ZINE-07", "PIN-LOGO"):
        assert kit.place([{"sku": sku, "qty": 1}]).status == 201
    kit.kill()
    store_exec(kit.state_dir, "UPDATE print_jobs SET state = 'sending'")  # a crash mid-send
    kit = kit_factory(state_dir=kit.state_dir)
    wait_for(lambda: [s for *_, s in job_states(kit)] == ["unsure", "unsure"], 15,
             "the interrupted receipts are unsure")
    page = browser.new_context(viewport=TABLET).new_page()
    open_till(page, kit)
    jobs = page.locator("#printjobs li")
    page.wait_for_function("document.querySelectorAll('#printjobs li').length === 2")
    first, second = jobs.nth(0), jobs.nth(1)
    assert first.inner_text().startswith("The receipt of order #1 may not have printed: the "
                                         "kit stopped while printing it.")
    assert "order #2" in second.inner_text()
    assert "check whether it printed" in first.locator("p").get_attribute("title")
    shot(page, "till-receipts-to-check-tablet")
    first.get_by_role("button", name="Reprint").click()
    page.locator("#message").filter(
        has_text="A copy of the receipt of order #1 is printing").wait_for()
    page.wait_for_function("document.querySelectorAll('#printjobs li').length === 1")
    assert "order #2" in jobs.first.inner_text()
    jobs.first.get_by_role("button", name="Mark checked").click()
    page.locator("#message").filter(has_text="The receipt of order #2: checked").wait_for()
    page.locator("#printjobs-section").wait_for(state="hidden")
    wait_for(lambda: job_states(kit) == [(1, "receipt", "checked"), (2, "receipt", "checked"),
                                         (1, "reprint", "printed")], 20,
             "the copy printed; both unsure receipts answered")
    assert kit.request("GET", "/api/staff/print-jobs", staff=True).data == {"unsure": []}


# The element is on screen below the sticky status strip, not under it: both measured at one
# moment in the page (the list is drawn again whenever an event comes, between two looks).
IN_VIEW = """(s) => {
  const element = document.querySelector(s);
  if (!element) return null;
  const box = element.getBoundingClientRect();
  const strip = document.getElementById("kit-status").getBoundingClientRect();
  return box.height > 0 && strip.bottom <= box.top && box.bottom <= innerHeight;
}"""


def in_view(page, selector: str) -> bool:
    seen = page.evaluate(IN_VIEW, selector)
    assert seen is not None, f"no {selector} on the page"
    return seen


def scrolled_to(page, selector: str) -> None:
    """Wait until the page has scrolled ``selector`` into view, below the status strip."""
    page.wait_for_function(f"(s) => ({IN_VIEW})(s) === true", arg=selector, timeout=10000)


def scan(kit: Kit, text: str) -> None:
    assert kit.request("POST", "/api/staff/sim/scan", {"text": text}, staff=True).status == 200


def test_a_scanned_receipt_or_pickup_code_opens_its_order_highlighted(kit: Kit, browser) -> None:
    sold = [kit.place([{"sku": "ZINE-07", "qty": 1}]).data for _ in range(32)]
    held = kit.place([{"sku": "PIN-LOGO", "qty": 2}], staff=False).data
    page = browser.new_context(viewport=PHONE).new_page()
    open_till(page, kit)
    page.locator("#orders li[data-number='32']").wait_for()
    assert not in_view(page, "#orders li[data-number='31']")
    # One of the 30 listed: highlighted where it is, scrolled to.
    scan(kit, sold[30]["receipt"]["hash"])
    row = "#orders li.highlight[data-number='31']"
    page.locator(row).wait_for(timeout=10000)
    page.locator("#message").filter(has_text="Receipt scanned: order #31, paid cash").wait_for()
    scrolled_to(page, row)
    assert in_view(page, row) and page.locator("#orders li.highlight").count() == 1
    shot(page, "till-receipt-scanned-phone")
    # An older one, not among them: opened at the top of the list.
    page.evaluate("window.scrollTo(0, 0)")
    scan(kit, sold[0]["receipt"]["hash"])
    row = "#orders li.highlight[data-number='1']"
    page.locator(row).wait_for(timeout=10000)
    assert page.locator("#orders li").first.get_attribute("data-number") == "1"
    scrolled_to(page, row)
    assert in_view(page, row) and page.locator("#orders li.highlight").count() == 1
    # A customer's pickup code off their phone: the reservation, highlighted, to be paid.
    page.evaluate("window.scrollTo(0, document.body.scrollHeight)")
    scan(kit, held["reservation"]["qr_text"])
    panel = f"#pickup.highlight[data-order-id='{held['order_id']}']"
    page.locator(panel).wait_for(timeout=10000)
    scrolled_to(page, panel)
    assert in_view(page, panel)
    shot(page, "till-pickup-scanned-phone")
