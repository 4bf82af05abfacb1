"""Customers' reservations over real HTTP on loopback, against the real daemon and its store:
an order without the staff credential holds stock, unpaid, until staff take the payment."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agent.core.holds import CODE_ALPHABET, CODE_LENGTH
from agent.ops.harness import Answer, EventStream, wait_for, write_config
from tests.conftest import Kit, new_order_id


def write_drop_manifest(path: Path, items: list[dict[str, Any]]) -> Path:
    """A manifest of items given as tables (with the optional keys the drop uses)."""
    lines = ['version = "drop-1"']
    for item in items:
        lines.append("[[items]]")
        lines += [f"{key} = {value!r}".replace("'", '"') if isinstance(value, str)
                  else f"{key} = {value}" for key, value in item.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def reserve(kit: Kit, lines: list[dict[str, Any]], order_id: str | None = None,
            device: str | None = "phone-0001", source: str | None = None) -> Answer:
    """A customer's order, as the shop page sends it (no staff credential)."""
    body: dict[str, Any] = {"order_id": order_id or new_order_id(), "lines": lines}
    if device is not None:
        body["device"] = device
    return kit.request("POST", "/api/orders", body, source=source)


def available(kit: Kit, sku: str) -> int:
    items = kit.request("GET", "/api/manifest").data["items"]
    return next(item["available"] for item in items if item["sku"] == sku)


def test_a_customer_order_holds_stock_unpaid_with_a_pickup_code(kit: Kit) -> None:
    answer = reserve(kit, [{"sku": "VINYL-LTD", "qty": 2}])
    assert answer.status == 201, answer.data
    order = answer.data
    assert order["status"] == "held" and order["payment"] == {"method": None,
                                                              "status": "unpaid"}
    assert order["receipt"] is None and order["total_cents"] == 6400
    code = order["reservation"]["code"]
    assert len(code) == CODE_LENGTH and set(code) <= set(CODE_ALPHABET)
    assert order["reservation"]["qr_text"] == f"PICKUP-{code}"
    assert 590 <= order["reservation"]["expires_in_s"] <= 600
    assert available(kit, "VINYL-LTD") == 8
    assert kit.request("GET", f"/api/orders/{order['order_id']}").data["reservation"]["code"] \
        == code
    # Not a sale: nothing in the receipt chain, nothing for HQ, no receipt printing.
    db = kit.open_store()
    try:
        assert db.execute("SELECT count(*) FROM receipts").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM outbox WHERE kind = 'sale'").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM print_jobs").fetchone()[0] == 0
        assert tuple(db.execute("SELECT held, sold FROM items WHERE sku = 'VINYL-LTD'")
                     .fetchone()) == (2, 0)
    finally:
        db.close()


def test_a_reservation_sent_again_is_the_same_one(kit: Kit) -> None:
    order_id, lines = new_order_id(), [{"sku": "ZINE-07", "qty": 3}]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: reserve(kit, lines, order_id), range(6)))
    assert sorted(a.status for a in answers) == [200] * 5 + [201]
    assert len({a.data["reservation"]["code"] for a in answers}) == 1
    assert available(kit, "ZINE-07") == 117
    other = reserve(kit, [{"sku": "ZINE-07", "qty": 4}], order_id)
    assert other.status == 409 and other.data["error"] == "order_id_reused"
    # A reservation's id cannot be sold over at the till either.
    till = kit.place(lines, order_id)
    assert till.status == 409 and till.data["error"] == "order_id_reused"
    db = kit.open_store()
    try:
        assert db.execute("SELECT count(*) FROM holds").fetchone()[0] == 1
    finally:
        db.close()


def test_a_customer_cannot_mark_anything_paid(kit: Kit) -> None:
    order = reserve(kit, [{"sku": "PIN-LOGO", "qty": 1}]).data
    path = f"/api/staff/orders/{order['order_id']}"
    for call in ("payment", "void", "refund", "reprint"):
        answer = kit.request("POST", f"{path}/{call}", {"result": "paid", "method": "cash"})
        assert answer.status == 401 and answer.data["error"] == "unauthorized", call
    # Asking for cash or card in the order itself does not pay it.
    cash = reserve(kit, [{"sku": "PIN-LOGO", "qty": 1}], device="phone-0002")
    assert cash.data["payment"]["status"] == "unpaid"
    for payment in ({"method": "cash", "status": "paid"}, {"status": "paid"}):
        answer = kit.request("POST", "/api/orders", {
            "order_id": new_order_id(), "lines": [{"sku": "PIN-LOGO", "qty": 1}],
            "payment": payment})
        assert answer.status == 422, answer.data
    assert kit.request("GET", f"/api/orders/{order['order_id']}").data["payment"] == {
        "method": None, "status": "unpaid"}
    assert kit.request("GET", "/api/staff/reservations").status == 401
    code = order["reservation"]["code"]
    assert kit.request("GET", f"/api/staff/reservations/{code}").status == 401


def test_staff_take_a_reservation_to_payment_by_its_code(kit: Kit) -> None:
    order = reserve(kit, [{"sku": "TEE-BLK-M", "qty": 2}]).data
    order_id, code = order["order_id"], order["reservation"]["code"]
    found = kit.request("GET", f"/api/staff/reservations/{code.lower()[:3]}-{code[3:]}",
                        staff=True)
    assert found.status == 200 and found.data["order_id"] == order_id
    listed = kit.request("GET", "/api/staff/reservations", staff=True).data["reservations"]
    assert [view["order_id"] for view in listed] == [order_id]
    path = f"/api/staff/orders/{order_id}/payment"
    failed = kit.request("POST", path, {"result": "failed"}, staff=True)
    assert failed.status == 409 and failed.data["error"] == "reservation_unpaid"
    no_method = kit.request("POST", path, {"result": "paid"}, staff=True)
    assert no_method.status == 422 and "cash" in no_method.data["detail"]
    paid = kit.request("POST", path, {"result": "paid", "method": "card"}, staff=True)
    assert paid.status == 200, paid.data
    sale = paid.data
    assert sale["payment"] == {"method": "card", "status": "paid"}
    assert sale["status"] == "queued" and sale["receipt"]["seq"] == 1
    assert sale["reservation"]["state"] == "settled" and sale["total_cents"] == 5000
    again = kit.request("POST", path, {"result": "paid", "method": "cash"}, staff=True)
    assert again.status == 409 and again.data["error"] == "payment_settled"
    assert kit.request("GET", f"/api/orders/{order_id}").data == sale
    assert available(kit, "TEE-BLK-M") == 38
    assert kit.request("GET", "/api/staff/reservations", staff=True).data["reservations"] == []
    db = kit.open_store()
    try:
        assert [tuple(r) for r in db.execute("SELECT kind, order_id FROM receipts")] == [
            ("sale", order_id)]
        assert db.execute("SELECT count(*) FROM outbox WHERE kind = 'sale'").fetchone()[0] == 1
        jobs = db.execute("SELECT kind FROM print_jobs WHERE order_id = ?", (order_id,))
        assert [r[0] for r in jobs] == ["receipt"]
        assert tuple(db.execute("SELECT held, sold FROM items WHERE sku = 'TEE-BLK-M'")
                     .fetchone()) == (0, 2)
    finally:
        db.close()
    # Let go: a reservation the customer did not come for is voided, its stock back at once.
    other = reserve(kit, [{"sku": "TEE-BLK-M", "qty": 1}], device="phone-0002").data
    voided = kit.request("POST", f"/api/staff/orders/{other['order_id']}/void", staff=True)
    assert voided.status == 200 and voided.data["status"] == "cancelled"
    assert available(kit, "TEE-BLK-M") == 38
    paid_late = kit.request("POST", f"/api/staff/orders/{other['order_id']}/payment",
                            {"result": "paid", "method": "cash"}, staff=True)
    assert paid_late.status == 409 and paid_late.data["error"] == "order_closed"
    unknown = kit.request("GET", "/api/staff/reservations/AAAAAA", staff=True)
    assert unknown.status == 404 and "six letters" in unknown.data["detail"]


def test_limit_per_customer_counts_the_device_and_the_address(kit_factory,
                                                              tmp_path: Path) -> None:
    manifest = write_drop_manifest(tmp_path / "m.toml", [
        {"sku": "VINYL", "name": "Limited vinyl", "price_cents": 3200, "qty": 10,
         "limit_per_customer": 2},
        {"sku": "PIN", "name": "Pin", "price_cents": 600, "qty": 100}])
    kit = kit_factory(config=write_config(tmp_path / "agent.toml",
                                          {"orders": {"manifest": str(manifest)}}))
    assert reserve(kit, [{"sku": "VINYL", "qty": 3}]).data["error"] == "limit_reached"
    first = reserve(kit, [{"sku": "VINYL", "qty": 1}, {"sku": "PIN", "qty": 5}])
    assert first.status == 201
    second = reserve(kit, [{"sku": "VINYL", "qty": 2}])
    assert second.status == 409 and second.data["error"] == "limit_reached", second.data
    assert second.data["detail"] == ("Limited vinyl: at most 2 per customer; this phone has 1 "
                                     "reserved already")
    assert (second.data["limit"], second.data["reserved"]) == (2, 1)
    # Storage cleared (a new device id), the same phone's address: still counted.
    cleared = reserve(kit, [{"sku": "VINYL", "qty": 2}], device="phone-new-1")
    assert cleared.status == 409 and cleared.data["error"] == "limit_reached"
    # Another phone; and a paid reservation still counts for its customer.
    other = reserve(kit, [{"sku": "VINYL", "qty": 2}], device="phone-0002", source="127.0.0.2")
    assert other.status == 201
    kit.request("POST", f"/api/staff/orders/{other.data['order_id']}/payment",
                {"result": "paid", "method": "cash"}, staff=True)
    assert reserve(kit, [{"sku": "VINYL", "qty": 1}], device="phone-0002",
                   source="127.0.0.3").data["error"] == "limit_reached"
    # Staff at the till are not limited; a cancelled reservation gives its units back.
    assert kit.place([{"sku": "VINYL", "qty": 3}]).status == 201
    kit.request("POST", f"/api/staff/orders/{first.data['order_id']}/void", staff=True)
    assert reserve(kit, [{"sku": "VINYL", "qty": 2}]).status == 201
    assert available(kit, "VINYL") == 10 - 2 - 3 - 2


def test_a_hold_that_runs_out_puts_its_stock_back_for_everyone_to_see(kit_factory,
                                                                     tmp_path: Path) -> None:
    kit = kit_factory(config=write_config(tmp_path / "agent.toml",
                                          {"orders": {"hold_minutes": 0.05}}))
    public = EventStream(kit, staff=False)
    try:
        order = reserve(kit, [{"sku": "VINYL-LTD", "qty": 4}]).data
        assert available(kit, "VINYL-LTD") == 6
        wait_for(lambda: public.find("availability") and
                 public.events[-1][1].get("available", {}).get("VINYL-LTD") == 10, 15,
                 "an availability event with the stock back")
    finally:
        public.close()
    view = kit.request("GET", f"/api/orders/{order['order_id']}").data
    assert view["status"] == "expired" and view["reservation"]["expires_in_s"] == 0
    late = kit.request("POST", f"/api/staff/orders/{order['order_id']}/payment",
                       {"result": "paid", "method": "cash"}, staff=True)
    assert late.status == 409 and late.data["error"] == "hold_expired"
    assert "back on sale" in late.data["detail"]
    assert available(kit, "VINYL-LTD") == 10
    # An expired hold does not count against the customer's limit, nor keeps its code.
    assert reserve(kit, [{"sku": "VINYL-LTD", "qty": 4}]).status == 201


def test_nothing_sells_before_opens_at(kit_factory, tmp_path: Path) -> None:
    manifest = write_drop_manifest(tmp_path / "m.toml", [
        {"sku": "DROP", "name": "Drop tee", "price_cents": 3000, "qty": 5,
         "opens_at": "2999-01-01T10:00:00+01:00"}])
    kit = kit_factory(config=write_config(tmp_path / "agent.toml",
                                          {"orders": {"manifest": str(manifest)}}))
    item = kit.request("GET", "/api/manifest").data["items"][0]
    assert item["opens_at"] == "2999-01-01T09:00:00.000+00:00" and item["opens_in_s"] > 0
    for answer in (reserve(kit, [{"sku": "DROP", "qty": 1}]),
                   kit.place([{"sku": "DROP", "qty": 1}])):
        assert answer.status == 409 and answer.data["error"] == "not_open", answer.data
        assert "Drop tee goes on sale at 2999-01-01 09:00:00 UTC" in answer.data["detail"]
        assert answer.data["opens_at"] == item["opens_at"]
    assert available(kit, "DROP") == 5


DROP_UNITS = 10
CUSTOMERS = 300


def test_the_drop_serves_the_first_requests_to_reach_the_kit(kit: Kit) -> None:
    """300 customers, each a phone of its own (its own address and device), send at the open
    for 10 units: exactly 10 reservations, each to one of the first 10 requests in the kit's
    own arrival order (the number each answer carries)."""
    opens = datetime.now(UTC) + timedelta(seconds=3)
    loaded = kit.request("PUT", "/api/staff/manifest", {"version": "drop-1", "items": [
        {"sku": "DROP", "name": "Drop vinyl", "price_cents": 3000, "qty": DROP_UNITS,
         "limit_per_customer": 1, "opens_at": opens.isoformat()}]}, staff=True)
    assert loaded.status == 200, loaded.data
    early = reserve(kit, [{"sku": "DROP", "qty": 1}], device="early-bird", source="127.0.3.1")
    assert early.status == 409 and early.data["error"] == "not_open"

    host, port = kit.address
    go = threading.Event()
    ready = threading.Barrier(CUSTOMERS + 1)

    def customer(n: int) -> Answer:
        connection = http.client.HTTPConnection(
            host, port, timeout=60, source_address=(f"127.0.{1 + n // 250}.{1 + n % 250}", 0))
        connection.connect()
        body = json.dumps({"order_id": new_order_id(), "device": f"phone-{n:04}",
                           "lines": [{"sku": "DROP", "qty": 1}]})
        ready.wait()
        go.wait()
        try:
            connection.request("POST", "/api/orders", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            return Answer(response.status, json.loads(response.read()))
        finally:
            connection.close()

    with concurrent.futures.ThreadPoolExecutor(CUSTOMERS) as pool:
        futures = [pool.submit(customer, n) for n in range(CUSTOMERS)]
        ready.wait()
        wait_for(lambda: kit.request("GET", "/api/manifest").data["items"][0]["opens_in_s"]
                 == 0, 30, "the kit's clock passes opens_at", interval=0.02)
        go.set()
        answers = [future.result() for future in futures]

    won = [a for a in answers if a.status == 201]
    lost = [a for a in answers if a.status != 201]
    assert len(won) == DROP_UNITS, sorted({(a.status, a.data.get("error")) for a in lost})
    assert {(a.status, a.data["error"]) for a in lost} == {(409, "sold_out")}
    arrivals = sorted([a.data["reservation"]["arrival"] for a in won] +
                      [a.data["arrival"] for a in lost])
    assert len(set(arrivals)) == CUSTOMERS
    assert sorted(a.data["reservation"]["arrival"] for a in won) == arrivals[:DROP_UNITS]
    assert available(kit, "DROP") == 0
    db = kit.open_store()
    try:
        stored = sorted(r[0] for r in db.execute("SELECT arrival FROM holds WHERE state = 'held'"))
        assert stored == arrivals[:DROP_UNITS]
    finally:
        db.close()
