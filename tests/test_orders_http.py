"""The order endpoint over real HTTP on loopback, against a real SQLite file."""

from __future__ import annotations

import concurrent.futures
import sqlite3
from pathlib import Path

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
        answer = client.post("/api/orders", json={
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
                                    "available": 45, "allocated": 50, "sold": 5}
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
        assert next(lines) == "event: mode"
        assert kit.stop() == 0
        list(lines)  # returns: the daemon ended the stream, the client did not
    log = "".join(kit.log)
    assert "store closed" in log and "graceful shutdown exceeded" not in log
