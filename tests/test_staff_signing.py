"""Signed staff requests: a staff request captured on the kit's Wi-Fi cannot be replayed, changed
or reused, and carries no reusable secret (docs/security.md).

Over real HTTP the signed request is written as raw bytes on a socket and the same bytes are
sent again, as a listener that captured them would. In one process the client's address is a
Wi-Fi one (10.42.0.23), where the bearer token is refused whatever it is.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.core.errors import Refusal
from agent.web.signing import WINDOW_MS, Nonces, Signatures, device_key, sign
from tests.conftest import Kit
from tests.inprocess import running_kit

WIFI_CLIENT = ("10.42.0.23", 50123)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def nonce() -> str:
    return secrets.token_urlsafe(16)


def raw_request(kit: Kit, method: str, path: str, body: bytes, signature: str) -> bytes:
    """The bytes of a staff request as they cross the air."""
    host, port = kit.address
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
            f"X-Staff-Signature: {signature}"]
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def send(kit: Kit, wire: bytes) -> tuple[int, dict[str, Any]]:
    """Send ``wire`` on a connection of its own; the status and the JSON answer."""
    with socket.create_connection(kit.address, timeout=30) as connection:
        connection.sendall(wire)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def signed_wire(kit: Kit, method: str, path: str, data: Any = None,
                time_ms: int | None = None) -> bytes:
    body = b"" if data is None else json.dumps(data).encode()
    signature = sign(device_key(kit.token), method, path, body,
                     now_ms() if time_ms is None else time_ms, nonce())
    return raw_request(kit, method, path, body, signature)


def test_a_captured_staff_request_replayed_is_refused_and_changes_nothing(kit: Kit) -> None:
    captured = signed_wire(kit, "POST", "/api/staff/mode", {"offline": True})
    assert kit.token.encode() not in captured  # nothing in it opens another door

    status, answer = send(kit, captured)
    assert status == 200 and "staff_latch" in answer["reasons"], answer
    # Staff release the latch; a listener replays the captured "force offline".
    assert send(kit, signed_wire(kit, "POST", "/api/staff/mode", {"offline": False}))[0] == 200
    status, answer = send(kit, captured)
    assert (status, answer["error"]) == (403, "replayed"), answer
    assert kit.health()["staff_latch"] is False


def test_a_changed_body_or_path_under_the_same_signature_is_refused(kit: Kit) -> None:
    captured = signed_wire(kit, "POST", "/api/staff/mode", {"offline": False})
    changed = captured.replace(b'{"offline": false}', b'{"offline": true }')
    assert changed != captured and len(changed) == len(captured)
    status, answer = send(kit, changed)
    assert (status, answer["error"]) == (403, "bad_signature"), answer
    moved = captured.replace(b"POST /api/staff/mode", b"POST /api/staff/stream-ticket")
    status, answer = send(kit, moved)
    assert (status, answer["error"]) == (403, "bad_signature"), answer
    assert kit.health()["staff_latch"] is False
    # The signature was not spent by the changed copies: the request itself still goes once.
    assert send(kit, captured)[0] == 200


def test_an_old_signature_is_refused_with_the_kits_time(kit: Kit) -> None:
    old = now_ms() - WINDOW_MS - 1_000
    status, answer = send(kit, signed_wire(kit, "GET", "/api/staff/check", time_ms=old))
    assert (status, answer["error"]) == (401, "stale_signature"), answer
    assert abs(answer["kit_time_ms"] - now_ms()) < 10_000
    ahead = now_ms() + WINDOW_MS + 1_000
    assert send(kit, signed_wire(kit, "GET", "/api/staff/check", time_ms=ahead))[0] == 401
    # Signed again at the kit's time, it goes.
    status, answer = send(kit, signed_wire(kit, "GET", "/api/staff/check"))
    assert (status, answer) == (200, {"staff": True})


def test_bad_signatures_are_guesses_the_brake_stops(kit: Kit) -> None:
    wrong_key = device_key("not-the-staff-token-at-all")
    codes = []
    for _ in range(11):
        signature = sign(wrong_key, "GET", "/api/staff/check", b"", now_ms(), nonce())
        codes.append(send(kit, raw_request(kit, "GET", "/api/staff/check", b"", signature))[0])
    assert codes == [403] * 10 + [429]
    status, answer = send(kit, signed_wire(kit, "GET", "/api/staff/check"))
    assert (status, answer["error"]) == (429, "too_many_attempts")


def test_on_the_wifi_the_bearer_token_opens_nothing_and_says_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path) as local:
            from agent.web.app import build_app

            transport = httpx.ASGITransport(app=build_app(local.kit), client=WIFI_CLIENT)
            async with httpx.AsyncClient(transport=transport, base_url="http://kit") as wifi:
                right = {"Authorization": f"Bearer {local.kit.staff_token}"}
                wrong = {"Authorization": "Bearer " + "x" * 32}
                answers = [await wifi.get("/api/staff/check", headers=headers)
                           for headers in (right, wrong)]
                # The same answer for the right token as for a wrong one: no oracle.
                assert [a.status_code for a in answers] == [403, 403]
                assert answers[0].json() == answers[1].json()
                assert "kit itself" in answers[0].json()["detail"]
                # A signed call from the same address does what staff asked.
                body = json.dumps({"offline": True}).encode()
                signature = sign(device_key(local.kit.staff_token), "POST", "/api/staff/mode",
                                 body, now_ms(), nonce())
                signed = await wifi.post("/api/staff/mode", content=body, headers={
                    "Content-Type": "application/json", "X-Staff-Signature": signature})
                assert signed.status_code == 200, signed.text
                assert (await local.health())["staff_latch"] is True
            # On the kit itself the bearer token still works (the command line, the drills).
            assert (await local.http.get("/api/staff/check", headers=right)).status_code == 200

    asyncio.run(scenario())


# -- the rules, on their own -------------------------------------------------------------------

KEY = device_key("s3cret-token-0123456789")
BODY = b'{"reason": "payment failed"}'
PATH = "/api/staff/orders/0b6f3d52-0c34-4b8f-9d59-4f0d6a1e2c11/void"


def refusal_code(signatures: Signatures, header: str, now: int, path: str = PATH,
                 body: bytes = BODY) -> str | None:
    try:
        signatures.check("POST", path, body, header, now)
    except Refusal as refusal:
        return refusal.code
    return None


@pytest.mark.parametrize("header", [
    "", "t=1,n=short,s=" + "0" * 64, "t=x,n=" + "n" * 22 + ",s=" + "0" * 64,
    "t=1000,n=" + "n" * 22 + ",s=" + "0" * 63, "s=" + "0" * 64 + ",t=1000,n=" + "n" * 22,
])
def test_a_malformed_signature_header_is_a_bad_signature(header: str) -> None:
    assert refusal_code(Signatures(KEY), header, 1_000) == "bad_signature"


def test_the_signature_covers_method_path_body_and_time() -> None:
    signatures = Signatures(KEY)
    header = sign(KEY, "POST", PATH, BODY, 10_000, "a" * 22)
    assert refusal_code(signatures, header, 10_000, path=PATH.replace("void", "refund")) \
        == "bad_signature"
    assert refusal_code(signatures, header, 10_000, body=BODY + b" ") == "bad_signature"
    assert refusal_code(signatures, header.replace("t=10000", "t=10001"), 10_000) \
        == "bad_signature"
    try:
        signatures.check("GET", PATH, BODY, header, 10_000)
    except Refusal as refusal:
        assert refusal.code == "bad_signature"
    assert refusal_code(signatures, header, 10_000) is None
    assert refusal_code(signatures, header, 10_001) == "replayed"


def test_the_nonce_memory_is_bounded_and_forgetting_opens_no_replay() -> None:
    nonces = Nonces(window_ms=60_000, size=100)
    signatures = Signatures(KEY, nonces)
    headers = [sign(KEY, "POST", PATH, BODY, 1_000_000 + i, f"nonce-{i:010d}-abcdef")
               for i in range(250)]
    for i, header in enumerate(headers):
        assert refusal_code(signatures, header, 1_000_000 + i) is None
        assert len(nonces) <= 100
    assert len(nonces) == 100
    # Every one of them, replayed: the remembered ones as replays, the forgotten as stale.
    codes = {refusal_code(signatures, header, 1_000_250) for header in headers}
    assert codes == {"replayed", "stale_signature"}
    assert refusal_code(signatures, headers[0], 1_000_250) == "stale_signature"
    assert refusal_code(signatures, headers[-1], 1_000_250) == "replayed"
    # A new request is still taken.
    assert refusal_code(signatures, sign(KEY, "POST", PATH, BODY, 1_000_251, "f" * 22),
                        1_000_251) is None


def test_nonces_expire_with_the_window_and_a_clock_stepping_back_replays_nothing() -> None:
    nonces = Nonces(window_ms=60_000, size=100)
    signatures = Signatures(KEY, nonces)
    early = sign(KEY, "POST", PATH, BODY, 1_000_000, "e" * 22)
    assert refusal_code(signatures, early, 1_000_000) is None
    later = sign(KEY, "POST", PATH, BODY, 1_070_000, "l" * 22)
    assert refusal_code(signatures, later, 1_070_000) is None
    assert len(nonces) == 1  # the early one is past the window: forgotten
    # The kit's clock steps back (a time sync): the forgotten nonce is still not taken again.
    assert refusal_code(signatures, early, 1_000_500) == "stale_signature"
