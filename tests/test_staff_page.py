"""The staff page in a real headless Chromium: order by clicking, see it listed."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Kit

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def page(tmp_path: Path) -> Iterator:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: ./run-tests installs it when run as root")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        context = browser.new_context(viewport={"width": 390, "height": 844})  # a phone
        yield context.new_page()
        browser.close()


def test_place_an_order_by_clicking_and_see_it_listed(kit: Kit, page, tmp_path: Path) -> None:
    page.goto(kit.url + "/")
    page.get_by_role("button", name="Zine no. 7").click()
    page.get_by_role("button", name="Zine no. 7").click()
    page.get_by_role("button", name="Limited vinyl").click()
    assert page.locator("#cart-total").inner_text() == "48.00"
    page.get_by_role("button", name="Place order").click()
    message = page.locator("#message")
    message.filter(has_text="Order #1 queued: 48.00").wait_for()
    listed = page.locator("#orders li").first
    listed.filter(has_text="2× Zine no. 7, 1× Limited vinyl").wait_for()
    assert "queued" in listed.inner_text()
    page.locator("[data-sku=VINYL-LTD]").filter(has_text="9 left").wait_for()
    page.screenshot(path=str(tmp_path / "staff-page.png"), full_page=True)
    with kit.client() as client:
        order_id = listed.get_attribute("data-order-id")
        stored = client.get(f"/api/orders/{order_id}").json()
        assert stored["total_cents"] == 4800 and stored["receipt"]["seq"] == 1


def test_staff_void_a_failed_card_payment_from_the_page(kit: Kit, page) -> None:
    page.goto(kit.url + "/")
    page.get_by_role("button", name="Tee, black, M").click()
    page.locator("#payment").select_option("card")
    page.get_by_role("button", name="Place order").click()
    page.locator("#orders li").filter(has_text="pending").wait_for()
    # Staff unlock with the token; a wrong one is refused.
    page.locator("#token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Unlock").click()
    page.locator("#message").filter(has_text="wrong").wait_for()
    page.locator("#token").fill(kit.token)
    page.get_by_role("button", name="Unlock").click()
    page.get_by_role("button", name="Card failed").click()
    page.get_by_role("button", name="Void").click()
    page.locator("#orders li").filter(has_text="voided").wait_for()
    page.locator("[data-sku=TEE-BLK-M]").filter(has_text="40 left").wait_for()
    page.get_by_role("button", name="Force offline").click()
    page.locator("#mode").filter(has_text="offline (latched)").wait_for()


def test_simulator_controls_pull_the_mains_and_scan_into_the_cart(kit: Kit, page) -> None:
    page.goto(kit.url + "/")
    page.locator("#token").fill(kit.token)
    page.get_by_role("button", name="Unlock").click()
    page.locator("#sim").wait_for()
    page.locator("#power").filter(has_text="OL").wait_for()
    page.get_by_role("button", name="Pull mains").click()
    page.locator("#power").filter(has_text="OB").wait_for(timeout=5000)
    page.locator("#power").filter(has_text="(battery)").wait_for()
    page.get_by_role("button", name="Restore mains").click()
    page.locator("#power").filter(has_text="OL").wait_for(timeout=5000)
    # A scanned SKU lands in the cart; a scanned receipt hash finds its order.
    page.locator("#scan-text").fill("ZINE-07")
    page.get_by_role("button", name="Scan", exact=True).click()
    page.locator("#cart li").filter(has_text="1 × Zine no. 7").wait_for()
    page.get_by_role("button", name="Place order").click()
    page.locator("#message").filter(has_text="queued").wait_for()
    with kit.client() as client:
        order = client.get("/api/orders", headers=kit.staff).json()["orders"][0]
    page.locator("#scan-text").fill(order["receipt"]["hash"])
    page.get_by_role("button", name="Scan", exact=True).click()
    page.locator("#message").filter(has_text=f"order {order['order_id']}").wait_for()
    # Paper out is an alert staff see.
    page.get_by_role("button", name="Paper out").click()
    page.locator("#alerts").filter(has_text="paper out").wait_for(timeout=15000)


def test_a_customer_page_follows_the_stock_and_staff_get_a_ticketed_stream(kit: Kit,
                                                                            page) -> None:
    """Anyone's page shows stock others bought from the public stream (the page has no timer
    that reloads the manifest); unlocked, it opens the staff stream with a ticket."""
    tickets: list[str] = []
    page.on("request", lambda request: tickets.append(request.url)
            if "/api/events" in request.url else None)
    page.goto(kit.url + "/")
    page.locator("[data-sku=VINYL-LTD]").filter(has_text="10 left").wait_for()
    assert kit.place([{"sku": "VINYL-LTD", "qty": 3}]).status == 201
    page.locator("[data-sku=VINYL-LTD]").filter(has_text="7 left").wait_for(timeout=10000)
    assert tickets == [kit.url + "/api/events"]
    page.locator("#token").fill(kit.token)
    page.get_by_role("button", name="Unlock").click()
    page.wait_for_function("() => document.querySelectorAll('#orders li').length === 1")
    other = kit.place([{"sku": "PIN-LOGO", "qty": 1}]).data["order_id"]
    page.locator(f"#orders li[data-order-id='{other}']").wait_for(timeout=10000)
    assert len(tickets) >= 2 and "?ticket=" in tickets[-1] and kit.token not in tickets[-1]
