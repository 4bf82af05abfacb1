"""The staff till (/till) in a real headless Chromium: order by clicking, see it listed; the
status strip with a degraded part, an alert, the shutdown's countdown and the kit gone."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from agent.ops.harness import wait_for, write_config
from tests.conftest import Kit
from tests.pages import PHONE, VIEWPORTS, open_till, shot, viewport_name
from tests.pages import browser as browser  # the fixture

pytestmark = pytest.mark.browser


@pytest.fixture
def page(browser) -> object:
    return browser.new_context(viewport=PHONE).new_page()


def test_place_an_order_by_clicking_and_see_it_listed(kit: Kit, page) -> None:
    page.goto(kit.url + "/till")
    assert page.get_by_role("button", name="Staff only").is_disabled()
    open_till(page, kit)
    page.get_by_role("button", name="Add Zine no. 7").click()
    page.get_by_role("button", name="Add Zine no. 7").click()
    page.get_by_role("button", name="Add Limited vinyl").click()
    assert page.locator("#cart-total").inner_text() == "48.00"
    page.get_by_role("button", name="Place order").click()
    message = page.locator("#message")
    message.filter(has_text="Order #1: 48.00 paid in cash.").wait_for()
    listed = page.locator("#orders li").first
    listed.filter(has_text="2× Zine no. 7, 1× Limited vinyl").wait_for()
    assert "Paid cash — sent to HQ later" in listed.inner_text()
    assert "status queued" in listed.locator(".state").get_attribute("title")
    page.locator("[data-sku=VINYL-LTD]").filter(has_text="9 left").wait_for()
    shot(page, "till-sold-phone", full_page=True)
    with kit.client() as client:
        order_id = listed.get_attribute("data-order-id")
        stored = client.get(f"/api/orders/{order_id}").json()
        assert stored["total_cents"] == 4800 and stored["number"] == 1


def test_staff_void_a_failed_card_payment_from_the_page(kit: Kit, page) -> None:
    page.goto(kit.url + "/till")
    # Staff unlock with the token; a wrong one is refused.
    page.locator("#token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Unlock").click()
    page.locator("#message").filter(has_text="wrong").wait_for()
    open_till(page, kit)
    page.get_by_role("button", name="Add Tee, black, M").click()
    page.get_by_text("Card (terminal)").click()
    page.get_by_role("button", name="Place order").click()
    order = page.locator("#orders li").filter(has_text="Card: waiting for the terminal")
    order.wait_for()
    order.get_by_role("button", name="Card declined").click()
    page.locator("#orders li").filter(has_text="Card declined: not paid").wait_for()
    page.get_by_role("button", name="Void").click()
    dialog = page.locator("#confirm")
    dialog.get_by_text("Card declined").click()
    dialog.get_by_role("button", name="Void order #1").click()
    page.locator("#orders li").filter(has_text="Voided").wait_for()
    page.locator("#message").filter(has_text="Voided: order #1").wait_for()
    page.locator("[data-sku=TEE-BLK-M]").filter(has_text="40 left").wait_for()
    page.get_by_role("button", name="Force offline").click()
    page.locator("#uplink").filter(has_text="Offline (by staff)").wait_for()


def test_simulator_controls_pull_the_mains_and_scan_into_the_cart(kit: Kit, page) -> None:
    open_till(page, kit)
    page.locator("#sim").wait_for()
    power = page.locator("#power")
    power.filter(has_text="On mains").wait_for()
    page.get_by_role("button", name="Pull mains").click()
    power.filter(has_text="On battery").wait_for(timeout=5000)
    assert "OB" in power.get_attribute("title")  # the code, in the tooltip only
    page.get_by_role("button", name="Restore mains").click()
    power.filter(has_text="On mains").wait_for(timeout=5000)
    # A scanned SKU lands in the cart; a scanned receipt hash finds its order.
    page.locator("#scan-text").fill("ZINE-07")
    page.get_by_role("button", name="Scan", exact=True).click()
    page.locator("#cart li[data-sku=ZINE-07] input").wait_for()
    assert page.locator("#cart li[data-sku=ZINE-07] input").input_value() == "1"
    page.get_by_role("button", name="Place order").click()
    page.locator("#message").filter(has_text="Order #1").wait_for()
    with kit.client() as client:
        order = client.get("/api/orders", headers=kit.staff).json()["orders"][0]
    page.locator("#scan-text").fill(order["receipt"]["hash"])
    page.get_by_role("button", name="Scan", exact=True).click()
    page.locator("#message").filter(has_text="Receipt scanned: order #1").wait_for()


def strip_fits(page) -> None:
    """The status strip is whole on screen and within its width, at the top of the page and
    scrolled to its end."""
    width, height = page.viewport_size["width"], page.viewport_size["height"]
    for scroll in ("0", "document.body.scrollHeight"):
        page.evaluate(f"window.scrollTo(0, {scroll})")
        # Measured in one step: the strip redraws its lists as the kit's events come.
        strip = page.evaluate("""() => {
          const s = document.getElementById("kit-status");
          const box = (node) => { const r = node.getBoundingClientRect();
            return { x: r.x, y: r.y, width: r.width, height: r.height }; };
          const items = [...s.querySelectorAll("li, .badge")]
            .filter((node) => { const r = node.getBoundingClientRect();  // as Playwright sees
              return r.width > 0 && r.height > 0 && getComputedStyle(node).visibility !== "hidden";
            });
          return { box: box(s), overflows: s.scrollWidth > s.clientWidth,
                   items: items.map((node) => ({ text: node.textContent, ...box(node) })) };
        }""")
        box = strip["box"]
        assert box["x"] == 0 and box["width"] <= width, box
        assert box["y"] >= 0 and box["y"] + box["height"] <= height, (scroll, box)
        assert not strip["overflows"], strip
        for item in strip["items"]:
            assert item["x"] + item["width"] <= width, item
            assert item["y"] >= 0 and item["y"] + item["height"] <= height, item
    page.evaluate("window.scrollTo(0, 0)")


STOPPING = "Shutting down: no new orders"


def record_status_words(page) -> None:
    """Keep every word the status strip shows from now on in ``window.statusWords``, however
    briefly it is there."""
    page.evaluate("""() => {
      const word = document.getElementById("kit-status-word");
      window.statusWords = [word.textContent];
      new MutationObserver(() => {
        if (window.statusWords.at(-1) !== word.textContent) {
          window.statusWords.push(word.textContent);
        }
      }).observe(word, { childList: true, characterData: true, subtree: true });
    }""")


def countdown_seconds(page) -> int:
    return int(page.locator("#countdown").get_attribute("data-seconds"))


@VIEWPORTS
def test_the_status_strip_shows_a_degraded_part_alerts_the_countdown_and_the_kit_gone(
        kit_factory, browser, tmp_path: Path, viewport: dict[str, int]) -> None:
    # Two panel buttons on one pin: the panel cannot start, a degraded part with its reason.
    kit = kit_factory(config=write_config(tmp_path / "agent.toml", {
        "kit": {"id": "kit-page"}, "panel": {"reprint_button": 17},
        "power": {"shutdown_delay_s": 12.0}}))
    health = kit.health()
    assert health["status"] == "degraded" and "GPIO17" in health["degraded"]["panel"]
    page = browser.new_context(viewport=viewport).new_page()
    name = viewport_name(viewport)
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
    shot(page, f"status-degraded-{name}")

    # An unplugged power sensor is an alert (not a degraded part), shown as it happens, with
    # what it means and what to do; it goes when the sensor is back.
    assert kit.request("POST", "/api/staff/sim/power", {"action": "unplug", "sensor": "gauge"},
                       staff=True).status == 200
    alert = page.locator("#kit-status-alerts li[data-alert=power_sensor_gauge]")
    alert.filter(has_text='Power sensor "gauge" is not answering: the battery level is not '
                          "known; check the power board's cable").wait_for(timeout=15000)
    strip_fits(page)
    shot(page, f"status-alert-{name}")
    assert kit.request("POST", "/api/staff/sim/power", {"action": "plug", "sensor": "gauge"},
                       staff=True).status == 200
    page.wait_for_function("document.getElementById('kit-status-alerts').children.length == 0",
                           timeout=15000)

    # The battery drains to critical: the countdown, counting down, before the kit goes.
    record_status_words(page)
    answer = kit.request("POST", "/api/staff/sim/power",
                         {"action": "scenario", "name": "drain_to_critical", "speed": 10},
                         staff=True)
    assert answer.status == 200
    countdown = page.locator("#countdown")
    try:
        countdown.filter(has_text=re.compile(
            r"Battery critical: the kit shuts down in 0:\d\d\. Plug in mains power now to "
            r"stop it\.")).wait_for(timeout=60000)
        first = countdown_seconds(page)
        assert 0 < first <= 12
        strip_fits(page)
        shot(page, f"status-countdown-{name}")
        page.wait_for_function(f"Number(document.getElementById('countdown').dataset.seconds)"
                               f" < {first}", timeout=5000)
        # The kit stops within a second of saying so: checked every frame, not every second.
        page.wait_for_function(f"window.statusWords.includes({STOPPING!r})", polling="raf",
                               timeout=30000)
        shot(page, f"status-stopping-{name}")
    finally:
        (tmp_path / "kit.log").write_text("".join(kit.log))
    started = time.monotonic()
    wait_for(lambda: kit.proc.poll() is not None, 30, "the kit exits after its shutdown")
    # Gone: the page says so, and why, rather than a stale "Ready" or its last countdown.
    banner = page.locator("#unreachable")
    banner.filter(has_text="The kit shut down for its battery and has not answered since").wait_for(
        timeout=15000)
    assert time.monotonic() - started < 15
    assert strip.get_attribute("data-status") == "unreachable" and countdown.is_hidden()
    words = page.evaluate("window.statusWords")
    assert words.index(STOPPING) < words.index("No answer from the kit"), words
    assert page.evaluate("document.body.classList.contains('stale')")
    strip_fits(page)
    shot(page, f"status-gone-{name}")


def test_the_banner_says_the_kit_is_unreachable_when_it_stops_answering(kit: Kit, page) -> None:
    open_till(page, kit)
    page.locator("#kit-status[data-status=ready]").wait_for()
    assert page.locator("#unreachable").is_hidden()
    kit.kill()  # the power cut, the kit's Wi-Fi gone: no goodbye
    banner = page.locator("#unreachable")
    banner.filter(has_text="The kit has not answered since").wait_for(timeout=15000)
    assert "check its power" in banner.inner_text()
    assert page.locator("#kit-status-word").inner_text() == "No answer from the kit"
    shot(page, "status-unreachable-phone")


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
    # Waited on by Playwright, whose calls are what deliver the page's request events (a loop
    # that sleeps between looks at ``tickets`` would not see a request made after the click).
    with page.expect_request(lambda request: "/api/events?ticket=" in request.url,
                             timeout=10000):
        page.get_by_role("button", name="Unlock").click()
        page.wait_for_function("() => document.querySelectorAll('#orders li').length === 1")
    assert any("?ticket=" in url for url in tickets), tickets
    other = kit.place([{"sku": "PIN-LOGO", "qty": 1}]).data["order_id"]
    page.locator(f"#orders li[data-order-id='{other}']").wait_for(timeout=10000)
    assert len(tickets) >= 2 and "?ticket=" in tickets[-1] and kit.token not in tickets[-1]
