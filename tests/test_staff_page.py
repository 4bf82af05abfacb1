"""The staff till (/till) in a real headless Chromium: order by clicking, see it listed."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.ops.harness import wait_for, write_config
from tests.conftest import Kit

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


PHONE = {"width": 390, "height": 844}
TABLET = {"width": 820, "height": 1180}
SHOTS = Path("/tmp/dropkit-shots")


@pytest.fixture
def browser() -> Iterator:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is missing: ./run-tests installs it when run as root")
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator:
    yield browser.new_context(viewport=PHONE).new_page()


def unlock(page, kit: Kit) -> None:
    page.locator("#token").fill(kit.token)
    page.get_by_role("button", name="Unlock").click()
    page.locator("#token-clear").wait_for()


def test_place_an_order_by_clicking_and_see_it_listed(kit: Kit, page, tmp_path: Path) -> None:
    page.goto(kit.url + "/till")
    assert page.get_by_role("button", name="Staff only").is_disabled()
    unlock(page, kit)
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
    page.goto(kit.url + "/till")
    # Staff unlock with the token; a wrong one is refused.
    page.locator("#token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Unlock").click()
    page.locator("#message").filter(has_text="wrong").wait_for()
    unlock(page, kit)
    page.get_by_role("button", name="Tee, black, M").click()
    page.locator("#payment").select_option("card")
    page.get_by_role("button", name="Place order").click()
    page.locator("#orders li").filter(has_text="pending").wait_for()
    page.get_by_role("button", name="Card failed").click()
    page.get_by_role("button", name="Void").click()
    page.locator("#orders li").filter(has_text="voided").wait_for()
    page.locator("[data-sku=TEE-BLK-M]").filter(has_text="40 left").wait_for()
    page.get_by_role("button", name="Force offline").click()
    page.locator("#mode").filter(has_text="offline (latched)").wait_for()


def test_simulator_controls_pull_the_mains_and_scan_into_the_cart(kit: Kit, page) -> None:
    page.goto(kit.url + "/till")
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


def shot(page, tmp_path: Path, name: str) -> None:
    """A screenshot in the test's directory, copied to /tmp/dropkit-shots to be looked at."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path))
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(path, SHOTS / path.name)


def strip_fits(page) -> None:
    """The status strip is whole on screen and within its width, at the top of the page and
    scrolled to its end."""
    width, height = page.viewport_size["width"], page.viewport_size["height"]
    for scroll in ("0", "document.body.scrollHeight"):
        page.evaluate(f"window.scrollTo(0, {scroll})")
        box = page.locator("#kit-status").bounding_box()
        assert box is not None and box["x"] == 0 and box["width"] <= width, box
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, (scroll, box)
        assert page.evaluate("(() => { const s = document.getElementById('kit-status');"
                             " return s.scrollWidth <= s.clientWidth; })()")
        for item in page.locator("#kit-status li").all():
            item_box = item.bounding_box()
            assert item_box is not None and item_box["x"] + item_box["width"] <= width
    page.evaluate("window.scrollTo(0, 0)")


@pytest.mark.parametrize("viewport", [PHONE, TABLET], ids=["phone", "tablet"])
def test_the_status_strip_shows_a_degraded_part_alerts_and_the_shutdown(
        kit_factory, browser, tmp_path: Path, viewport: dict[str, int]) -> None:
    # Two panel buttons on one pin: the panel cannot start, a degraded part with its reason.
    kit = kit_factory(config=write_config(tmp_path / "agent.toml", {
        "kit": {"id": "kit-page"}, "panel": {"reprint_button": 17},
        "power": {"shutdown_delay_s": 1.0}}))
    health = kit.health()
    assert health["status"] == "degraded" and "GPIO17" in health["degraded"]["panel"]
    page = browser.new_context(viewport=viewport).new_page()
    name = "phone" if viewport == PHONE else "tablet"
    page.goto(kit.url + "/till")
    strip = page.locator("#kit-status")
    strip.filter(has_text="Taking orders, but something needs attention").wait_for()
    part = page.locator("#kit-status-parts li[data-part=panel]")
    part.filter(has_text="Button panel is not working").wait_for()
    words = part.inner_text()
    assert "pin GPIO17 is already in use" in words and "Sales go on without it" in words
    assert "GPIOPinInUse" not in words and "<" not in words, words  # plain words
    assert strip.get_attribute("class") == "kit-status degraded"
    strip_fits(page)
    shot(page, tmp_path, f"status-degraded-{name}")

    # An unplugged power sensor is an alert (not a degraded part), shown as it happens.
    assert kit.request("POST", "/api/staff/sim/power", {"action": "unplug", "sensor": "gauge"},
                       staff=True).status == 200
    alerts = page.locator("#kit-status-alerts")
    alerts.filter(has_text='Power sensor "gauge" is not answering').wait_for(timeout=15000)
    strip_fits(page)
    shot(page, tmp_path, f"status-alert-{name}")
    assert kit.request("POST", "/api/staff/sim/power", {"action": "plug", "sensor": "gauge"},
                       staff=True).status == 200
    page.wait_for_function("document.getElementById('kit-status-alerts').children.length == 0",
                           timeout=15000)

    # The battery drains to critical: the kit says it is shutting down before it goes.
    answer = kit.request("POST", "/api/staff/sim/power",
                         {"action": "scenario", "name": "drain_to_critical", "speed": 50},
                         staff=True)
    assert answer.status == 200
    stopping = strip.filter(has_text="Shutting down: no new orders")
    try:
        stopping.wait_for(timeout=60000)
    finally:
        shot(page, tmp_path, f"status-stopping-{name}")
        (tmp_path / "kit.log").write_text("".join(kit.log))
    assert strip.get_attribute("data-status") == "stopping"
    started = time.monotonic()
    wait_for(lambda: kit.proc.poll() is not None, 30, "the kit exits after its shutdown")
    # Gone, the page still says why rather than a stale "Ready".
    page.locator("#kit-status[data-status=stopping]").wait_for()
    assert time.monotonic() - started < 30


def test_a_locked_till_follows_the_stock_and_staff_get_a_ticketed_stream(kit: Kit,
                                                                          page) -> None:
    """The till, locked, shows stock others bought from the public stream (the page has no
    timer that reloads the manifest); unlocked, it opens the staff stream with a ticket."""
    tickets: list[str] = []
    page.on("request", lambda request: tickets.append(request.url)
            if "/api/events" in request.url else None)
    page.goto(kit.url + "/till")
    page.locator("[data-sku=VINYL-LTD]").filter(has_text="10 left").wait_for()
    assert kit.place([{"sku": "VINYL-LTD", "qty": 3}]).status == 201
    page.locator("[data-sku=VINYL-LTD]").filter(has_text="7 left").wait_for(timeout=10000)
    assert tickets == [kit.url + "/api/events"]
    page.locator("#token").fill(kit.token)
    page.get_by_role("button", name="Unlock").click()
    page.wait_for_function("() => document.querySelectorAll('#orders li').length === 1")
    wait_for(lambda: any("?ticket=" in url for url in tickets), 10, "the staff stream opened")
    other = kit.place([{"sku": "PIN-LOGO", "qty": 1}]).data["order_id"]
    page.locator(f"#orders li[data-order-id='{other}']").wait_for(timeout=10000)
    assert len(tickets) >= 2 and "?ticket=" in tickets[-1] and kit.token not in tickets[-1]
