"""The till's signed staff calls in a real headless Chromium (docs/security.md).

The page's SHA-256 and HMAC (``static/staffsign.js``) are checked against RFC 4231's test vectors
and Python's hashlib, outside oracles; the till unlocks and forces the kit offline with its
device clock an hour off, and what it sent is captured from the browser and sent again.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.web.signing import device_key, sign
from tests import pages
from tests.conftest import Kit

pytestmark = pytest.mark.browser
browser = pages.browser  # the same headless Chromium
STAFFSIGN = Path(__file__).resolve().parents[1] / "agent" / "web" / "static" / "staffsign.js"

# RFC 4231 section 4: (key, data, HMAC-SHA-256); test case 5's is truncated to 128 bits.
RFC_4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\x0c" * 20, b"Test With Truncation", "a3b6167473100ee06e0c796c2955552b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]
HOUR_MS = 3_600_000


@pytest.fixture
def blank(browser) -> Any:
    """A page with nothing but staffsign.js, at a made-up origin."""
    page = browser.new_context().new_page()
    page.route("http://kit.test/", lambda route: route.fulfill(
        content_type="text/html", body=f"<script>{STAFFSIGN.read_text()}</script>"))
    page.goto("http://kit.test/")
    return page


def js_hmac(page, key: bytes, data: bytes) -> str:
    return page.evaluate("([k, d]) => staffSign.hex(staffSign.hmac(staffSign.fromHex(k), "
                         "staffSign.fromHex(d)))", [key.hex(), data.hex()])


def test_the_pages_hmac_sha256_meets_rfc_4231(blank) -> None:
    # Plain http at a name other than localhost, as on the kit's Wi-Fi: no WebCrypto there.
    assert blank.evaluate("typeof crypto.subtle") == "undefined"
    for key, data, expected in RFC_4231:
        assert js_hmac(blank, key, data)[:len(expected)] == expected, (key, data)


def test_the_pages_sha256_matches_hashlib_across_block_edges(blank) -> None:
    rng = random.Random(4231)
    for length in [*range(0, 130), 1000, 4097]:
        data = rng.randbytes(length)
        got = blank.evaluate("(d) => staffSign.hex(staffSign.sha256(staffSign.fromHex(d)))",
                             data.hex() if data else "00")
        assert got == hashlib.sha256(data if data else b"\x00").hexdigest(), length
    empty = blank.evaluate("staffSign.hex(staffSign.sha256(new Uint8Array(0)))")
    assert empty == hashlib.sha256(b"").hexdigest()


def test_the_page_signs_as_the_kit_checks(blank) -> None:
    """The device key and the header, with a body of non-ASCII text, as agent.web.signing
    makes them."""
    token, body = "3tgr-nyuq-urbh-rz3e-8eh3", '{"reason": "carte refusée ☕"}'
    key = blank.evaluate("(t) => staffSign.deviceKey(t)", token)
    assert key == device_key(token).hex()
    header = blank.evaluate(
        "([k, b]) => staffSign.header(k, 'post', '/api/staff/orders/x/void?y=1', b, "
        "1718000000123, 'AAAAAAAAAAAAAAAAAAAAAA')", [key, body])
    assert header == sign(device_key(token), "POST", "/api/staff/orders/x/void?y=1",
                          body.encode(), 1718000000123, "A" * 22)


def test_the_till_acts_with_signed_calls_that_carry_no_secret_and_replay_nothing(
        kit: Kit, browser) -> None:
    page = browser.new_context(viewport=pages.TABLET).new_page()
    # This tablet's clock is an hour behind the kit's: the first staff call learns the kit's.
    page.add_init_script(f"{{ const now = Date.now; Date.now = () => now() - {HOUR_MS}; }}")
    sent: list[Any] = []
    answers: list[tuple[str, int]] = []
    page.on("request", lambda request: sent.append(request))
    page.on("response", lambda r: answers.append((r.url, r.status))
            if "/api/staff/" in r.url else None)
    page.goto(kit.url + "/till")
    page.locator("#token").fill(kit.token)
    page.get_by_role("button", name="Unlock").click()
    page.get_by_role("button", name="Force offline").click()
    page.locator("#uplink").filter(has_text="Offline (by staff)").wait_for()
    pages.shot(page, "till-signed-offline-tablet")
    assert kit.health()["staff_latch"] is True

    staff_calls = [r for r in sent if "/api/staff/" in r.url]
    assert staff_calls and all("x-staff-signature" in r.headers and
                               "authorization" not in r.headers for r in staff_calls)
    # The token crossed nothing: not in a URL, a header or a body, nor kept by the page.
    for request in sent:
        assert kit.token not in request.url + str(request.headers) + (request.post_data or "")
    assert kit.token not in str(page.evaluate("Object.values(localStorage)"))
    assert answers[0] == (kit.url + "/api/staff/check", 401)  # stale: the clock was off
    assert (kit.url + "/api/staff/check", 200) in answers

    # A listener captured the till's "force offline"; staff release the latch; it is replayed.
    [captured] = [r for r in staff_calls if r.url.endswith("/api/staff/mode")]
    page.get_by_role("button", name="Release offline").click()
    page.wait_for_function("() => !document.getElementById('latch').dataset.latched")
    wire = {"content-type": captured.headers["content-type"],
            "x-staff-signature": captured.headers["x-staff-signature"]}
    with httpx.Client(timeout=30) as listener:
        replay = listener.post(captured.url, content=captured.post_data_buffer, headers=wire)
        assert (replay.status_code, replay.json()["error"]) == (403, "replayed")
        changed = listener.post(captured.url, content=b'{"offline":false}', headers=wire)
        assert (changed.status_code, changed.json()["error"]) == (403, "bad_signature")
    assert kit.health()["staff_latch"] is False
