"""The order endpoint over real HTTP on loopback, against a real SQLite file."""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.conftest import Kit, new_order_id, write_manifest


def available(kit: Kit, client: httpx.Client, sku: str) -> int:
    items = client.get("/api/manifest").json()["items"]
    return next(item["available"] for item in items if item["sku"] == sku)


def test_sixteen_clients_race_for_the_last_ten_units(kit: Kit) -> None:
    with kit.client() as client:
        # VINYL-LTD starts at 10 in the demo manifest.
        assert available(kit, client, "VINYL-LTD") == 10

    def buy_one(_: int) -> httpx.Response:
        with kit.client() as client:
            return kit.order(client, [{"sku": "VINYL-LTD", "qty": 1}])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(buy_one, range(16)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [201] * 10 + [409] * 6
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["error"] == "sold_out"
        assert refused.json()["sku"] == "VINYL-LTD"
    with kit.client() as client:
        assert available(kit, client, "VINYL-LTD") == 0
    db = sqlite3.connect(kit.state_dir / "dropkit.db")
    assert db.execute("SELECT min(allocated - sold) FROM items").fetchone()[0] >= 0
    assert db.execute("SELECT sum(delta) FROM stock_ledger WHERE sku = 'VINYL-LTD' "
                      "AND field = 'sold'").fetchone()[0] == 10
    # Each sale has its own receipt link.
    seqs = sorted(a.json()["receipt"]["seq"] for a in answers if a.status_code == 201)
    assert seqs == list(range(1, 11))


def test_the_same_order_five_times_at_once_is_one_sale(kit: Kit) -> None:
    order_id = new_order_id()
    with kit.client() as client:
        before = available(kit, client, "ZINE-07")

    def send(_: int) -> httpx.Response:
        with kit.client() as client:
            return kit.order(client, [{"sku": "ZINE-07", "qty": 3}], order_id)

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(send, range(5)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
    assert len({a.content for a in answers}) == 1, "five identical answers"
    with kit.client() as client:
        assert available(kit, client, "ZINE-07") == before - 3
        again = kit.order(client, [{"sku": "ZINE-07", "qty": 3}], order_id)
        assert again.status_code == 200 and again.content == answers[0].content
        other = kit.order(client, [{"sku": "ZINE-07", "qty": 4}], order_id)
        assert other.status_code == 409 and other.json()["error"] == "order_id_reused"
        assert available(kit, client, "ZINE-07") == before - 3


def test_prices_come_from_the_manifest(kit: Kit) -> None:
    with kit.client() as client:
        answer = client.post("/api/orders", headers=kit.staff, json={
            "order_id": new_order_id(), "lines": [{"sku": "PIN-LOGO", "qty": 2}],
            "payment": {"method": "cash"}})
        assert answer.status_code == 201
        order = answer.json()
        assert order["total_cents"] == 1200
        assert order["lines"][0] == {"sku": "PIN-LOGO", "name": "Enamel pin", "qty": 2,
                                     "price_cents": 600, "amount_cents": 1200}
        assert order["status"] == "queued"
        assert order["payment"] == {"method": "cash", "status": "paid"}
        assert len(order["receipt"]["hash"]) == 64
        assert client.get(f"/api/orders/{order['order_id']}").json() == order
        # A client that tries to set its own price is refused, not obeyed.
        cheat = client.post("/api/orders", json={
            "order_id": new_order_id(), "lines": [{"sku": "PIN-LOGO", "qty": 1,
                                                   "price_cents": 1}]})
        assert cheat.status_code == 422


def test_bad_input_gets_a_clear_4xx_and_changes_nothing(kit: Kit) -> None:
    good_line = [{"sku": "ZINE-07", "qty": 1}]
    cases = [
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
         "bad_json"),
        ({"content": b"\xff\xfe", "headers": {"content-type": "application/json"}}, 400,
         "bad_json"),
        ({"content": b'{"order_id": "x"}', "headers": {"content-type": "text/plain"}}, 415,
         "unsupported_media_type"),
        ({"json": {"lines": good_line}}, 422, "invalid"),
        ({"json": {"order_id": 12345678, "lines": good_line}}, 422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": "ZINE-07"}}, 422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": []}}, 422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": [{"sku": "ZINE-07", "qty": -1}]}},
         422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": [{"sku": "ZINE-07", "qty": 0}]}},
         422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": [{"sku": "ZINE-07", "qty": 10**12}]}},
         422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": [{"sku": "ZINE-07", "qty": 1.5}]}},
         422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": [{"sku": "ZINE-07", "qty": True}]}},
         422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": [{"sku": "ZINE-07", "qty": "2"}]}},
         422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": [{"sku": "NOPE", "qty": 1}]}},
         422, "unknown_sku"),
        ({"json": {"order_id": new_order_id(), "lines": good_line * 2}}, 422, "invalid"),
        ({"json": {"order_id": new_order_id(), "lines": good_line,
                   "payment": {"method": "bitcoin"}}}, 422, "invalid"),
        ({"json": [1, 2, 3]}, 422, "invalid"),
        ({"content": b"x" * 1_000_000, "headers": {"content-type": "application/json"}}, 413,
         "body_too_large"),
    ]
    with kit.client() as client:
        before = client.get("/api/manifest").json()
        for request, status, code in cases:
            answer = client.post("/api/orders", **request)
            assert answer.status_code == status, (request, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert answer.json()["error"] == code and answer.json()["detail"]
        assert client.post("/api/orders", json={
            "order_id": new_order_id(), "lines": [{"sku": "NOPE", "qty": 1}]}).json()[
            "sku"] == "NOPE"
        # A 1 MB body sent in chunks, with no length declared up front, is refused as well.
        chunks = (b"[" + b"1," * 100 for _ in range(5000))
        streamed = client.post("/api/orders", content=chunks,
                               headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert client.get("/api/manifest").json() == before
        assert client.get("/api/orders/no-such-order-id").status_code == 404
        assert client.get("/nowhere").json()["error"] == "not_found"
        assert client.delete("/api/manifest").status_code == 405


def test_staff_endpoints_need_the_token(kit: Kit) -> None:
    staff_calls = [
        ("GET", "/api/orders"), ("GET", "/api/staff/check"),
        ("POST", "/api/staff/orders/abcdefgh-1/void"),
        ("POST", "/api/staff/orders/abcdefgh-1/refund"),
        ("POST", "/api/staff/orders/abcdefgh-1/payment"),
        ("POST", "/api/staff/mode"), ("PUT", "/api/staff/manifest"),
    ]
    with kit.client() as client:
        for method, path in staff_calls:
            answer = client.request(method, path, json={"offline": True})
            assert answer.status_code == 401, (method, path)
            assert answer.json()["error"] == "unauthorized"
        wrong = {"Authorization": "Bearer " + "x" * 32}
        answer = client.request("POST", "/api/staff/mode", json={"offline": True}, headers=wrong)
        assert answer.status_code == 403
        assert client.get("/api/health").json()["staff_latch"] is False
        assert client.get("/api/staff/check", headers=kit.staff).status_code == 200


def test_guessing_the_token_is_rate_limited(kit: Kit) -> None:
    with kit.client() as client:
        codes = [client.get("/api/staff/check", headers={"Authorization": f"Bearer guess{n:012}"})
                 .status_code for n in range(12)]
        assert codes[:10] == [403] * 10 and codes[10:] == [429, 429]
        # Even the right token waits out the minute from an address that kept guessing.
        limited = client.get("/api/staff/check", headers=kit.staff)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0


def test_a_failed_card_payment_is_voided_and_its_stock_returns(kit: Kit) -> None:
    with kit.client() as client:
        before = available(kit, client, "TEE-BLK-M")
        order = kit.order(client, [{"sku": "TEE-BLK-M", "qty": 2}], method="card").json()
        assert order["payment"] == {"method": "card", "status": "pending"}
        assert available(kit, client, "TEE-BLK-M") == before - 2
        path = f"/api/staff/orders/{order['order_id']}"
        failed = client.post(f"{path}/payment", json={"result": "failed"}, headers=kit.staff)
        assert failed.json()["payment"]["status"] == "failed"
        voided = client.post(f"{path}/void", json={"reason": "card declined"},
                             headers=kit.staff)
        assert voided.status_code == 200 and voided.json()["status"] == "voided"
        assert available(kit, client, "TEE-BLK-M") == before
        # Nothing is undone twice.
        again = client.post(f"{path}/void", headers=kit.staff)
        assert again.status_code == 409 and again.json()["error"] == "order_closed"
        assert available(kit, client, "TEE-BLK-M") == before
        # A paid sale is refunded, not voided.
        paid = kit.order(client, [{"sku": "TEE-BLK-M", "qty": 1}]).json()
        refused = client.post(f"/api/staff/orders/{paid['order_id']}/void", headers=kit.staff)
        assert refused.status_code == 409 and refused.json()["error"] == "paid"
        refunded = client.post(f"/api/staff/orders/{paid['order_id']}/refund",
                               json={"restock": True}, headers=kit.staff)
        assert refunded.json()["status"] == "refunded"
        assert available(kit, client, "TEE-BLK-M") == before
    db = sqlite3.connect(kit.state_dir / "dropkit.db")
    kinds = [r[0] for r in db.execute("SELECT kind FROM receipts ORDER BY seq")]
    assert kinds == ["sale", "void", "sale", "refund"]
    outbox = [r[0] for r in db.execute("SELECT kind FROM outbox WHERE kind != 'event' "
                                        "ORDER BY id")]
    assert outbox == ["sale", "void", "sale", "refund"]


def test_loading_a_new_manifest_keeps_what_was_sold(kit: Kit, tmp_path: Path) -> None:
    with kit.client() as client:
        assert kit.order(client, [{"sku": "ZINE-07", "qty": 5}]).status_code == 201
        new = {"version": "restock-2", "items": [
            {"sku": "ZINE-07", "name": "Zine no. 7", "price_cents": 900, "qty": 50},
            {"sku": "CAP-01", "name": "Cap", "price_cents": 1500, "qty": 5}]}
        loaded = client.put("/api/staff/manifest", json=new, headers=kit.staff)
        assert loaded.status_code == 200, loaded.text
        items = {i["sku"]: i for i in loaded.json()["items"]}
        assert items["ZINE-07"] == {"sku": "ZINE-07", "name": "Zine no. 7", "price_cents": 900,
                                    "available": 45, "allocated": 50, "sold": 5, "held": 0,
                                    "limit_per_customer": None, "opens_at": None,
                                    "opens_in_s": 0}
        assert set(items) == {"ZINE-07", "CAP-01"}, "items left out stop selling"
        assert kit.order(client, [{"sku": "TEE-BLK-M", "qty": 1}]).json()["error"] == \
            "unknown_sku"
        # Below what is already sold: refused, nothing changes.
        under = {"version": "oops", "items": [
            {"sku": "ZINE-07", "name": "Zine no. 7", "price_cents": 900, "qty": 4}]}
        conflict = client.put("/api/staff/manifest", json=under, headers=kit.staff)
        assert conflict.status_code == 409 and conflict.json()["skus"] == ["ZINE-07"]
        assert client.get("/api/manifest").json()["version"] == "restock-2"
        bad = client.put("/api/staff/manifest", json={"version": "x", "items": [{"sku": "A"}]},
                         headers=kit.staff)
        assert bad.status_code == 422 and bad.json()["error"] == "invalid_manifest"
        assert client.get("/api/health").json()["manifest"]["version"] == "restock-2"


def test_staff_latch_forces_offline_and_survives_a_restart(kit_factory, tmp_path: Path) -> None:
    kit = kit_factory(tmp_path / "latch")
    with kit.client() as client:
        answer = client.post("/api/staff/mode", json={"offline": True}, headers=kit.staff)
        assert answer.json() == {"mode": "offline", "reasons": ["staff_latch", "uplink_off"]}
    kit.kill()
    kit = kit_factory(tmp_path / "latch")
    with kit.client() as client:
        health = client.get("/api/health").json()
        assert health["staff_latch"] is True and health["mode"] == "offline"
        client.post("/api/staff/mode", json={"offline": False}, headers=kit.staff)
        assert client.get("/api/health").json()["mode_reasons"] == ["uplink_off"]


def test_orders_survive_sigterm_with_requests_in_flight(kit_factory, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    manifest = write_manifest(tmp_path / "m.toml", [("A-1", "A", 100, 100000)])
    config.write_text(f'[orders]\nmanifest = "{manifest}"\n')
    kit = kit_factory(tmp_path / "term", config)
    confirmed: list[str] = []

    def keep_ordering(_: int) -> None:
        with kit.client() as client:
            while True:
                try:
                    answer = kit.order(client, [{"sku": "A-1", "qty": 1}])
                except httpx.HTTPError:
                    return
                if answer.status_code != 201:
                    return
                confirmed.append(answer.json()["order_id"])

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(keep_ordering, n) for n in range(4)]
        while len(confirmed) < 50:
            pass
        assert kit.stop() == 0
        for future in futures:
            future.result()
    assert "store closed" in "".join(kit.log)
    db = sqlite3.connect(tmp_path / "term" / "dropkit.db")
    stored = {r[0] for r in db.execute("SELECT order_id FROM orders")}
    assert set(confirmed) <= stored


def test_sigterm_ends_open_event_streams_rather_than_waiting_them_out(kit: Kit) -> None:
    with kit.client() as client, client.stream("GET", "/api/events") as stream:
        lines = stream.iter_lines()
        assert (next(lines), next(lines)) == ("retry: 1000", "event: mode")
        assert kit.stop() == 0
        list(lines)  # returns: the daemon ended the stream, the client did not
    log = "".join(kit.log)
    assert "store closed" in log and "graceful shutdown exceeded" not in log


def test_an_order_id_is_matched_whole_and_every_parameter_checked(kit: Kit) -> None:
    """The review's cases: an order id with a trailing newline was taken as another order (and
    the staff page, whose URL drops the newline, then refunded the first); a 300-letter static
    name, a 5000-digit print job id and ``limit=²`` answered 500."""
    victim = "victim-ord-01"
    with kit.client() as client:
        assert kit.order(client, [{"sku": "ZINE-07", "qty": 1}], victim).status_code == 201
        twin = kit.order(client, [{"sku": "PIN-LOGO", "qty": 1}], victim + "\n")
        assert twin.status_code == 422 and twin.json()["error"] == "invalid", twin.text
        assert client.get("/api/orders/victim-ord-01%0A").status_code == 404
        refund = client.post("/api/staff/orders/victim-ord-01%0A/refund", headers=kit.staff)
        assert refund.status_code == 404
        assert client.get(f"/api/orders/{victim}").json()["status"] == "queued"
        assert client.get("/static/" + "a" * 300).status_code == 404
        assert client.get("/static/app.js").status_code == 200
        job = "/api/staff/print-jobs/" + "9" * 5000 + "/checked"
        assert client.post(job).status_code == 401
        assert client.post(job, headers=kit.staff).status_code == 404
        assert client.post("/api/staff/print-jobs/²/checked", headers=kit.staff).status_code == 404
        for limit in ("²", "٣", "9" * 5000, "-1", "0", "501", " 5"):
            answer = client.get("/api/orders", params={"limit": limit}, headers=kit.staff)
            assert answer.status_code == 422 and "limit" in answer.json()["detail"], limit
        assert len(client.get("/api/orders?limit=1", headers=kit.staff).json()["orders"]) == 1
        db = kit.open_store()
        try:
            assert [r[0] for r in db.execute("SELECT order_id FROM orders")] == [victim]
        finally:
            db.close()


def test_json_is_utf8_without_repeated_keys(kit: Kit) -> None:
    line = '{"sku": "ZINE-07", "qty": 1}'
    json_type = {"content-type": "application/json"}
    with kit.client() as client:
        before = client.get("/api/manifest").json()
        repeated = client.post("/api/orders", headers=json_type, content=(
            f'{{"order_id": "{new_order_id()}", "lines": [{line}], "lines": []}}').encode())
        assert repeated.status_code == 400 and repeated.json()["error"] == "bad_json"
        assert "'lines' appears twice" in repeated.json()["detail"]
        inner = client.post("/api/orders", headers=json_type, content=(
            f'{{"order_id": "{new_order_id()}", "lines": [{{"sku": "ZINE-07", "qty": 1, '
            f'"qty": 99}}]}}').encode())
        assert inner.status_code == 400, inner.text
        for constant in (b"NaN", b"Infinity", b"1e999"):
            answer = client.post("/api/staff/mode", headers={**json_type, **kit.staff},
                                 content=b'{"offline": ' + constant + b"}")
            assert answer.status_code == 400 and answer.json()["error"] == "bad_json"
        body = f'{{"order_id": "{new_order_id()}", "lines": [{line}]}}'
        for charset in ("latin-1", "utf-16", "ascii"):
            answer = client.post("/api/orders", content=body.encode(),
                                 headers={"content-type": f"application/json; charset={charset}"})
            assert answer.status_code == 415, charset
        utf16 = client.post("/api/orders", content=body.encode("utf-16"), headers=json_type)
        assert utf16.status_code == 400 and utf16.json()["error"] == "bad_json"
        assert client.get("/api/manifest").json() == before
        sold = client.post("/api/orders", content=body.encode(),
                           headers={**kit.staff,
                                    "content-type": 'application/json; charset="UTF-8"'})
        assert sold.status_code == 201, sold.text


def test_the_same_lines_in_another_order_are_the_same_order(kit: Kit) -> None:
    order_id = new_order_id()
    lines = [{"sku": "ZINE-07", "qty": 2}, {"sku": "PIN-LOGO", "qty": 1}]
    with kit.client() as client:
        first = kit.order(client, lines, order_id)
        assert first.status_code == 201
        again = kit.order(client, lines[::-1], order_id)
        assert again.status_code == 200 and again.content == first.content
        other = kit.order(client, [{"sku": "ZINE-07", "qty": 1}, {"sku": "PIN-LOGO", "qty": 2}],
                          order_id)
        assert other.status_code == 409 and other.json()["error"] == "order_id_reused"
        assert available(kit, client, "ZINE-07") == 120 - 2


def old_fingerprint(lines: list[tuple[str, int]], method: str) -> str:
    """The fingerprint as dropkit stored it before line order stopped mattering: the canonical
    JSON of the lines as the client sent them and the payment method."""
    body = json.dumps({"lines": lines, "payment": method}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def test_a_retry_of_an_order_stored_by_an_older_kit_still_matches(kit_factory,
                                                                  tmp_path: Path) -> None:
    state, order_id = tmp_path / "older", new_order_id()
    kit = kit_factory(state)
    lines = [{"sku": "ZINE-07", "qty": 2}, {"sku": "PIN-LOGO", "qty": 1}]
    with kit.client() as client:
        first = kit.order(client, lines, order_id)
        assert first.status_code == 201
    assert kit.stop() == 0
    db = sqlite3.connect(state / "dropkit.db")
    with db:
        db.execute("UPDATE orders SET fingerprint = ? WHERE order_id = ?",
                   (old_fingerprint([("ZINE-07", 2), ("PIN-LOGO", 1)], "cash"), order_id))
    db.close()
    kit = kit_factory(state)
    with kit.client() as client:
        for retry in (lines, lines[::-1]):
            again = kit.order(client, retry, order_id)
            assert again.status_code == 200 and again.content == first.content, again.text
        other = kit.order(client, [{"sku": "ZINE-07", "qty": 2}], order_id)
        assert other.status_code == 409 and other.json()["error"] == "order_id_reused"
        card = kit.order(client, lines, order_id, method="card")
        assert card.status_code == 409
        assert available(kit, client, "ZINE-07") == 120 - 2


def test_an_unreadable_request_gets_the_api_s_json_error(kit: Kit) -> None:
    """What uvicorn's parser refuses before the app sees it (a made-up method, bytes that are
    not HTTP, a broken chunk) is answered in the API's error shape too."""
    address = urlsplit(kit.url)
    for raw in (b"FOO /api/health HTTP/1.1\r\nHost: kit\r\n\r\n", b"GARBAGE\r\n\r\n",
                b"GET /api/\xff HTTP/1.1\r\nHost: kit\r\n\r\n",
                b"POST /api/orders HTTP/1.1\r\nHost: kit\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"):
        with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
            sock.sendall(raw)
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), (raw, answer)
        assert b"content-type: application/json" in head.lower(), (raw, answer)
        assert json.loads(body)["error"] == "bad_request", (raw, answer)
    assert kit.health()["status"] == "ready"
    assert "Exception in ASGI application" not in "".join(kit.log)
