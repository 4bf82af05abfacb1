"""A property-based run over the HTTP API: whatever arrives, the answer is never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Kit

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
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])
content_types = st.sampled_from(["application/json", "application/json; charset=utf-8",
                                 "text/plain", "", "application/x-www-form-urlencoded"])


@pytest.fixture(scope="module")
def fuzz_kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Kit, httpx.Client]]:
    kit = Kit(tmp_path_factory.mktemp("fuzz")).start()
    with kit.client() as client:
        yield kit, client
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
    _, client = fuzz_kit
    answer = client.post("/api/orders", content=json.dumps(body),
                         headers={"content-type": "application/json"})
    assert_clean(answer)
    if answer.status_code in (200, 201):
        assert answer.json()["total_cents"] >= 0


@FUZZ
@given(method=methods, path=paths, content_type=content_types,
       body=st.one_of(json_values.map(json.dumps).map(str.encode), st.binary(max_size=300)),
       staff=st.booleans())
def test_any_request_gets_a_json_answer_below_500(fuzz_kit, method, path, content_type, body,
                                                  staff) -> None:
    kit, client = fuzz_kit
    headers = {"content-type": content_type} if content_type else {}
    if staff:
        headers.update(kit.staff)
    answer = client.request(method, path, content=body, headers=headers)
    assert_clean(answer)


def test_stock_is_never_negative_after_the_fuzzing(fuzz_kit) -> None:
    _, client = fuzz_kit
    for item in client.get("/api/manifest").json()["items"]:
        assert item["available"] >= 0
