"""A property-based run over the HTTP API: whatever arrives, the answer is never a 5xx, and
the stock left is exactly what the orders it accepted took."""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent
from tests.conftest import Kit, new_order_id

DEMO = tomllib.loads((Path(agent.__file__).parent / "demo-manifest.toml").read_text())["items"]
DEMO_STOCK = {item["sku"]: item["qty"] for item in DEMO}
PRICES = {item["sku"]: item["price_cents"] for item in DEMO}

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                         st.text(max_size=80))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)),
    max_leaves=20)
skus = st.one_of(st.sampled_from(["ZINE-07", "PIN-LOGO", "VINYL-LTD", "TEE-BLK-M"]),
                 st.text(max_size=70))
quantities = st.one_of(st.integers(-5, 200), st.integers(), json_scalars)
lines = st.lists(st.one_of(st.fixed_dictionaries({"sku": skus, "qty": quantities}),
                           json_values), max_size=25)
order_ids = st.one_of(st.uuids().map(str), st.text(max_size=80), json_scalars)
orders = st.fixed_dictionaries(
    {"order_id": order_ids, "lines": lines},
    optional={"payment": st.one_of(st.fixed_dictionaries(
        {"method": st.sampled_from(["cash", "card", "gold"])}), json_values),
        "extra": json_values})
paths = st.sampled_from(["/api/orders", "/api/manifest", "/api/health",
                         "/api/staff/mode", "/api/staff/manifest",
                         "/api/staff/orders/abcdefgh-1/void", "/api/staff/orders/x/payment"]) | \
    st.text(alphabet="/abcdefghijklmnopqrstuvwxyz-_.%?=&0123456789", max_size=40).map(
        lambda p: "/api/" + p)
valid_orders = st.fixed_dictionaries(
    {"lines": st.lists(st.sampled_from(sorted(DEMO_STOCK)), min_size=1, max_size=3,
                       unique=True).flatmap(lambda chosen: st.tuples(
                           *[st.integers(1, 30) for _ in chosen]).map(
                           lambda qtys, chosen=chosen: [{"sku": sku, "qty": qty} for sku, qty
                                                        in zip(chosen, qtys, strict=True)]))},
    optional={"payment": st.fixed_dictionaries({"method": st.sampled_from(["cash", "card"])})})
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                 "text/plain", "", "application/x-www-form-urlencoded"])


@dataclass
class Fuzzed:
    """The fuzzed kit, and what the fuzzing saw it sell: ``{order_id: {sku: qty}}`` of every
    order answered 201, taken from the request the test sent (not from the answer)."""

    kit: Kit
    client: httpx.Client
    sold: dict[str, dict[str, int]] = field(default_factory=dict)
    left: Counter[str] = field(default_factory=lambda: Counter(DEMO_STOCK))
    """The test's own count of what is left: the demo manifest less what it saw sold."""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
        """Send ``body``; an order (staff's, a sale) is counted as the test sends it."""
        answer = self.client.post(path, content=body, headers=headers)
        if answer.status_code == 201:
            sent = json.loads(body)
            self.sold[sent["order_id"]] = {line["sku"]: line["qty"] for line in sent["lines"]}
            self.left.subtract(self.sold[sent["order_id"]])
        elif answer.status_code == 200 and path == "/api/orders":
            # A retry answers the first sale again; it must be one the fuzzing saw made.
            assert answer.json()["order_id"] in self.sold, answer.text
        return answer


@pytest.fixture(scope="module")
def fuzz_kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    kit = Kit(tmp_path_factory.mktemp("fuzz")).start()
    with kit.client() as client:
        yield Fuzzed(kit, client)
    kit.kill()


def assert_clean(answer: httpx.Response) -> None:
    assert answer.status_code < 500, answer.text
    if answer.status_code >= 400:
        assert answer.headers["content-type"] == "application/json"
        assert set(answer.json()) >= {"error", "detail"}


FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@FUZZ
@given(body=orders)
def test_near_valid_orders_never_crash(fuzz_kit, body) -> None:
    answer = fuzz_kit.post("/api/orders", json.dumps(body).encode(),
                           {"content-type": "application/json", **fuzz_kit.kit.staff})
    assert_clean(answer)
    if answer.status_code in (200, 201):
        assert answer.json()["total_cents"] >= 0


@FUZZ
@given(body=valid_orders)
def test_valid_orders_sell_exactly_what_is_left(fuzz_kit, body) -> None:
    """Well-formed orders until the stock runs out: each one is sold (201) when the test's own
    count says every line fits in what is left, refused as sold out (409) when one does not."""
    body = {"order_id": new_order_id(), **body}  # hypothesis repeats its UUIDs across examples
    fits = all(line["qty"] <= fuzz_kit.left[line["sku"]] for line in body["lines"])
    answer = fuzz_kit.post("/api/orders", json.dumps(body).encode(),
                           {"content-type": "application/json", **fuzz_kit.kit.staff})
    assert_clean(answer)
    if fits:
        assert answer.status_code == 201, answer.text
        assert answer.json()["total_cents"] == sum(
            line["qty"] * PRICES[line["sku"]] for line in body["lines"])
    else:
        assert answer.status_code == 409 and answer.json()["error"] == "sold_out", answer.text
        short = answer.json()["sku"]
        assert answer.json()["available"] == fuzz_kit.left[short]
        assert any(line["sku"] == short and line["qty"] > fuzz_kit.left[short]
                   for line in body["lines"])


@FUZZ
@given(method=methods, path=paths, content_type=content_types,
       body=st.one_of(json_values.map(json.dumps).map(str.encode), st.binary(max_size=300)),
       staff=st.booleans())
def test_any_request_gets_a_json_answer_below_500(fuzz_kit, method, path, content_type, body,
                                                  staff) -> None:
    headers = {"content-type": content_type} if content_type else {}
    if staff:
        headers.update(fuzz_kit.kit.staff)
    if method == "POST":
        answer = fuzz_kit.post(path, body, headers)
    else:
        answer = fuzz_kit.client.request(method, path, content=body, headers=headers)
    assert_clean(answer)


def test_stock_left_is_what_the_fuzzing_saw_sold(fuzz_kit) -> None:
    """Recount from outside the sales code: the demo manifest's quantities, less the units of
    every order the kit answered 201 (as the test sent them), must be what the API shows as
    available, what the store's order lines add up to and what its stock ledger moved."""
    allocated = DEMO_STOCK
    sold_by_test = Counter[str]()
    for order_id, lines in fuzz_kit.sold.items():
        stored = fuzz_kit.client.get(f"/api/orders/{order_id}")
        assert stored.status_code == 200, f"order {order_id} answered 201 is not stored"
        assert {line["sku"]: line["qty"] for line in stored.json()["lines"]} == lines
        # The fuzzing voids and refunds made-up order ids only: every sale still holds its stock.
        assert stored.json()["status"] not in ("voided", "refunded"), order_id
        sold_by_test.update(lines)
    shown = {item["sku"]: item for item in fuzz_kit.client.get("/api/manifest").json()["items"]}
    assert set(shown) == set(allocated)
    for sku, qty in allocated.items():
        assert shown[sku]["allocated"] == qty
        assert shown[sku]["available"] == qty - sold_by_test[sku], sku
    db = fuzz_kit.kit.open_store()
    try:
        in_lines = dict(db.execute(
            "SELECT sku, sum(qty) FROM order_lines GROUP BY sku").fetchall())
        in_ledger = dict(db.execute("SELECT sku, sum(delta) FROM stock_ledger "
                                    "WHERE field = 'sold' GROUP BY sku").fetchall())
        stored_orders = {row[0] for row in db.execute("SELECT order_id FROM orders")}
    finally:
        db.close()
    assert stored_orders == set(fuzz_kit.sold), "the store holds sales nobody was told of"
    assert {sku: n for sku, n in in_lines.items() if n} == dict(+sold_by_test)
    assert {sku: n for sku, n in in_ledger.items() if n} == dict(+sold_by_test)
    # And the fuzzing got far enough to prove something: sales made, and stock sold out.
    assert len(fuzz_kit.sold) >= 20 and min(shown[sku]["available"] for sku in shown) == 0


# -- every route and method the app serves ----------------------------------------------------

def served_routes(state_dir: Path) -> list[tuple[str, str]]:
    """``(path, method)`` for every route of the kit's own app and every method, read from the
    app itself (a kit built, never started), so a route added later is fuzzed too."""
    from agent.app.daemon import demo_manifest
    from agent.app.kit import Kit as DaemonKit
    from agent.app.kit import Wiring
    from agent.config import parse_config
    from agent.web.app import build_app

    kit = DaemonKit(parse_config({}), Wiring(simulated=True, state_dir=state_dir,
                                             host="127.0.0.1", port=0, manifest=demo_manifest()))
    paths = sorted({route.path for route in build_app(kit).routes})  # type: ignore[attr-defined]
    return [(path, method) for path in paths for method in ALL_METHODS]


ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
REAL_ORDER = "fuzzed-route-order-1"
hostile = st.sampled_from(["victim-ord-01\n", "x", "a" * 65, "²" * 8, "٣٣٣٣٣٣٣٣", "9" * 5000,
                           "a" * 300, "..", "%0A", " 1", "-1", "0x10", "1e3", "\x00", "é" * 70])
PARAMS = {
    "order_id": st.one_of(st.just(REAL_ORDER), hostile, st.uuids().map(str),
                          st.text(max_size=80)),
    "job_id": st.one_of(st.integers(-10, 10**30).map(str), hostile, st.text(max_size=30)),
    "name": st.one_of(st.sampled_from(["app.js", "shop.js", "style.css", "till.html", "..",
                                       ".hidden"]), hostile, st.text(max_size=300)),
    "code": st.one_of(st.sampled_from(["AAAAAA", "pickup-aaaaaa", "AAA-AAA"]), hostile,
                      st.text(max_size=40)),
    "device": st.one_of(st.sampled_from(["power", "scan", "button", "paper", "printer"]),
                        hostile, st.text(max_size=40)),
    "kit": st.one_of(st.sampled_from(["kit-0035969e", "kit-other"]), hostile,
                     st.text(max_size=80)),
    "seq": st.one_of(st.integers(-10, 10**30).map(str), hostile, st.text(max_size=30)),
    "hash": st.one_of(st.text("0123456789abcdefABCDEF", min_size=63, max_size=65), hostile,
                      st.text(max_size=80)),
}
query_values = st.one_of(hostile, st.integers(-5, 10**25).map(str), st.text(max_size=40))
queries = st.fixed_dictionaries({}, optional={"limit": query_values, "ticket": query_values})
# Bodies that never name a simulator action that would power the kit off (pull_mains, a
# scenario, the shutdown button): random text does not spell them.
route_bodies = st.one_of(
    json_values.map(json.dumps).map(str.encode), st.binary(max_size=200),
    st.sampled_from([b'{"a": 1, "a": 2}', b'{"offline": NaN}', b'{"reason": 1e999}',
                     b'{"result": "paid"}', b'{"restock": true, "reason": "fuzz"}',
                     b'{"offline": true}', b'{"offline": false}', b'{"text": "ZINE-07"}']))
route_content_types = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                       "application/json; charset=latin-1",
                                       'application/json; charset="UTF-8"', "text/plain", ""])


@pytest.fixture(scope="module")
def route_kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kit, httpx.Client,
                                                                          list[tuple[str, str]]]]:
    kit = Kit(tmp_path_factory.mktemp("routes")).start()
    with kit.client() as client:
        placed = kit.order(client, [{"sku": "ZINE-07", "qty": 1}], REAL_ORDER, method="card")
        assert placed.status_code == 201, placed.text
        yield kit, client, served_routes(tmp_path_factory.mktemp("unstarted"))
    kit.kill()


@pytest.mark.parametrize("staff", [True, False], ids=["staff", "anonymous"])
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_route_and_method_answers_below_500(route_kit, staff, data) -> None:
    """Each example sends every method to every route the app serves, its path parameters,
    query and body drawn from hostile values; with the staff token first (the brake on wrong
    tokens would answer 429 to the staff token after the anonymous run)."""
    kit, client, routes = route_kit
    for path, method in routes:
        url = path
        for name, values in PARAMS.items():
            if "{" + name + "}" in url:
                url = url.replace("{" + name + "}", quote(data.draw(values, name), safe=""))
        query = data.draw(queries, "query")
        if staff and path == "/api/events" and data.draw(st.booleans(), "real ticket"):
            query["ticket"] = client.post("/api/staff/stream-ticket",
                                          headers=kit.staff).json()["ticket"]
        content_type = data.draw(route_content_types, "content type")
        headers = {"content-type": content_type} if content_type else {}
        if staff:
            headers.update(kit.staff)
        body = data.draw(route_bodies, "body") if method in ("POST", "PUT", "PATCH") else None
        with client.stream(method, url, params=query, content=body, headers=headers) as answer:
            assert answer.status_code < 500, (method, url, query, body)
            if answer.status_code >= 400 and method != "HEAD":  # HEAD answers have no body
                answer.read()
                assert_clean(answer)
    assert kit.health()["status"] != "stopping", "the fuzzing must not have shut the kit down"
