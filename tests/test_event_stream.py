"""The event stream over real HTTP: each viewer sees only what they may."""

from __future__ import annotations

import json

from agent.ops.harness import EventStream, wait_for
from tests.conftest import Kit, new_order_id


def vinyl_left(stream: EventStream) -> list[int]:
    return [data["available"]["VINYL-LTD"] for kind, data in list(stream.events)
            if kind == "availability"]


def test_anyone_sees_stock_and_mode_and_only_staff_see_orders_scans_and_alerts(kit: Kit) -> None:
    public, staff = EventStream(kit, staff=False), EventStream(kit)
    try:
        wait_for(lambda: public.events and staff.events, 10, "both streams begin")
        assert public.events[0] == ("mode", {"state": "offline", "reasons": ["uplink_off"]})
        assert staff.events[0][0] == "health"
        kit.request("POST", "/api/staff/sim/scan", {"text": "ZINE-07"}, staff=True)
        kit.request("POST", "/api/staff/sim/paper", {"level": "out"}, staff=True)
        wait_for(lambda: staff.find("scan", sku="ZINE-07")
                 and staff.find("alert", type="paper_out"),
                 15, "staff see the scan and the paper-out alert")
        order_id = new_order_id()
        assert kit.place([{"sku": "VINYL-LTD", "qty": 2}], order_id, method="card").status == 201
        order = wait_for(lambda: staff.find("order", order_id=order_id), 10, "staff see the sale")
        assert order["lines"][0]["sku"] == "VINYL-LTD" and order["payment"]["method"] == "card"
        # The public stream gets events in the order the kit made them: once it shows the stock
        # the sale left, it has had (and left out) the scan, the alert and the sale.
        wait_for(lambda: 8 in vinyl_left(public), 10, "anyone sees the stock the sale left")
        seen = json.dumps(public.events)
        for secret in (order_id, '"lines"', '"payment"', "card", '"receipt"', '"paper"',
                       '"kind"', '"sku"', '"type"'):
            assert secret not in seen, secret
        assert {kind for kind, _ in public.events} <= {"mode", "availability", "status"}
        assert all(data == {"status": data["status"]} for kind, data in public.events
                   if kind == "status")  # the word only: no parts, no alerts
        assert 8 in vinyl_left(staff)
    finally:
        public.close()
        staff.close()


def test_a_stream_ticket_opens_one_stream_and_only_from_the_staff_token(kit: Kit) -> None:
    with kit.client() as client:
        refused = client.post("/api/staff/stream-ticket")
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        ticket = client.post("/api/staff/stream-ticket", headers=kit.staff).json()
        assert ticket["expires_in_s"] == 30 and len(ticket["ticket"]) >= 32
        with client.stream("GET", "/api/events", params={"ticket": ticket["ticket"]}) as opened:
            assert opened.status_code == 200
            lines = opened.iter_lines()
            assert (next(lines), next(lines)) == ("retry: 1000", "event: health")
        for spent in (ticket["ticket"], "made-up-ticket", kit.token, ""):
            again = client.get("/api/events", params={"ticket": spent})
            assert again.status_code == 401 and "stream ticket" in again.json()["detail"], spent
    assert "".join(kit.log).count(kit.token) == 1, "the token is in the log only where sim shows it"
