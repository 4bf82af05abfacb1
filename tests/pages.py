"""What the page tests share: a real headless Chromium, the phone and tablet sizes, and the
screenshots, kept in one folder to be looked at after the run.

The folder is ``$DROPKIT_ARTIFACTS``, or ``<repo>/.artifacts/screens/`` (git ignores it); a
shot is named by what it shows and the viewport, and a later run replaces it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import needs
from tests.conftest import Kit

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
PHONE = {"width": 390, "height": 844}
TABLET = {"width": 820, "height": 1180}
VIEWPORTS = pytest.mark.parametrize("viewport", [PHONE, TABLET], ids=["phone", "tablet"])
SCREENS = Path(os.environ.get("DROPKIT_ARTIFACTS")
               or Path(__file__).resolve().parents[1] / ".artifacts" / "screens")


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        needs.missing("Debian's chromium", "chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield browser
        browser.close()


def viewport_name(viewport: dict[str, int]) -> str:
    return "phone" if viewport == PHONE else "tablet"


def shot(page: Any, name: str, *, full_page: bool = False) -> Path:
    """A screenshot of what the page shows now, into the screenshots folder; the whole page
    from its top with ``full_page`` (where the sticky status strip is at its place)."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    path = SCREENS / f"{name}.png"
    if full_page:
        page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(path), full_page=full_page)
    return path


# Sets ``window.staffStreamLive`` once the page's staff stream has sent its first event (the
# kit's health): from then on the kit's events (a scan, an order) reach the page. Before it,
# a scan the test makes is heard by nobody.
STREAM_LIVE = """(() => {
  if ("staffStreamLive" in window) return;
  window.staffStreamLive = false;
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("health", () => { window.staffStreamLive = true; });
    }
  };
})();"""


def open_till(page: Any, kit: Kit) -> None:
    """The till at ``/till``, unlocked with the staff token, its staff stream open."""
    page.add_init_script(STREAM_LIVE)
    page.goto(kit.url + "/till")
    page.locator("#token").fill(kit.token)
    page.get_by_role("button", name="Unlock").click()
    page.locator("#token-clear").wait_for()
    page.wait_for_function("window.staffStreamLive === true", timeout=20000)
