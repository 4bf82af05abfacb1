"""Every payload the kit and HQ put on the broker matches its JSON Schema (agent.schemas)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from agent import schemas
from agent.core import outbox
from agent.core.mode import Mode
from agent.core.orders import refund_order, settle_payment, void_order
from agent.core.receipts import GENESIS_HASH, chain_hash
from agent.core.reconcile import apply_ack, parse_ack, sweep
from tests.conftest import write_manifest
from tests.core.sales_helpers import KIT, at, moment, open_db, sell
from tests.mqtt_helpers import Broker, Hq, Listener, kit_config, wait_for


@pytest.fixture(scope="module")
def validators() -> dict[str, jsonschema.Draft202012Validator]:
    found = {}
    for topic in schemas.NAMES:
        jsonschema.Draft202012Validator.check_schema(schemas.load(topic))
        found[topic] = jsonschema.Draft202012Validator(
            schemas.load(topic), format_checker=jsonschema.FormatChecker())
    return found


def test_payloads_match_their_schemas(kit_factory, tmp_path, validators) -> None:
    broker = Broker(tmp_path / "broker").start()
    hq = Hq(broker, tmp_path / "hq.db").start()
    manifest = write_manifest(tmp_path / "stock.toml", [("A-1", "Item A", 250, 100)])
    config = kit_config(tmp_path / "agent.toml", broker, manifest, ha_discovery=True,
                        telemetry_interval_s=0.3)
    listener = Listener(broker, "dropkit/#", "homeassistant/#")
    kit = kit_factory(tmp_path / "state", config)
    with kit.client() as client:
        wait_for(lambda: client.get("/api/health").json()["mode"] == "online", 10, "online")
        sale = client.post("/api/orders", headers=kit.staff,
                           json={"order_id": "payload-test-1", "lines": [
            {"sku": "A-1", "qty": 2}], "payment": {"method": "card"}}).json()
        path = f"/api/staff/orders/{sale['order_id']}"
        client.post(f"{path}/payment", json={"result": "failed"}, headers=kit.staff)
        client.post(f"{path}/void", json={"reason": "declined"}, headers=kit.staff)
        paid = client.post("/api/orders", headers=kit.staff,
                           json={"order_id": "payload-test-2", "lines": [
            {"sku": "A-1", "qty": 1}]}).json()
        client.post(f"/api/staff/orders/{paid['order_id']}/refund", headers=kit.staff)
        client.post("/api/staff/mode", json={"offline": True}, headers=kit.staff)
    seen: dict[str, list[dict]] = {}
    discovery = []

    def collect() -> bool:
        while not listener.messages.empty():
            topic, payload, _, _ = listener.messages.get()
            if topic.startswith("dropkit/hq/"):  # HQ's status, plain text like a kit's
                assert payload in (b"online", b"offline"), (topic, payload)
                continue
            if topic.startswith("homeassistant/"):
                discovery.append(json.loads(payload))
                continue
            kind = topic.split("/", 2)[2].replace("/", "-")
            if kind != "status":
                seen.setdefault(kind, []).append(json.loads(payload))
        types = {m["type"] for m in seen.get("orders", [])}
        events = {m["event"]["type"] for m in seen.get("events", [])}
        return types == {"sale", "void", "refund"} and "mode" in events and \
            len(seen.get("acks", [])) >= 2 and len(seen.get("telemetry-power", [])) >= 2

    wait_for(collect, 15, "sales, voids, refunds, events, acks and telemetry on the broker")
    for kind, messages in seen.items():
        for message in messages:
            validators[kind].validate(message)
    assert {m["event"]["state"] for m in seen["events"] if m["event"]["type"] == "mode"} >= \
        {"offline"}
    # Home Assistant discovery: retained configs naming the kit's topics.
    assert {c["unique_id"] for c in discovery} >= {"dropkit_kit-test_battery",
                                                   "dropkit_kit-test_mode"}
    assert all(c["availability_topic"] == "dropkit/kit-test/status" for c in discovery)
    # The ops view sees the kit.
    watch = subprocess.run([sys.executable, "-m", "agent", "watch", "--broker", broker.url,
                            "--once", "1.5"], capture_output=True, text=True, timeout=30,
                           env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"})
    assert watch.returncode == 0, watch.stderr
    assert "kit-test" in watch.stdout and "online" in watch.stdout
    listener.close()
    hq.stop()
    broker.stop()


def outbox_payloads(db: sqlite3.Connection) -> dict[str, list[dict]]:
    """The outbox's messages as the uplink publishes them (with their msg_id), by schema."""
    found: dict[str, list[dict]] = {}
    for row in outbox.pending(db, 0, 1000):
        found.setdefault(outbox.SCHEMA_OF_KIND[row["kind"]], []).append(
            json.loads(outbox.with_message_id(row["payload"], row["id"])))
    return found


def test_every_kind_of_outbox_message_matches_its_schema(tmp_path: Path, validators) -> None:
    """Sales, voids, refunds and events as the sales rules write them, without a broker; and
    each schema refuses the message once a field its kind must carry is taken out."""
    db = open_db(tmp_path / "kit.db")
    sell(db, "order-card", 0, qty=2, method="card")
    settle_payment(db, "order-card", False, at(1))
    void_order(db, "order-card", "card declined", KIT, at(2))
    sell(db, "order-cash", 3)
    refund_order(db, "order-cash", True, "changed their mind", KIT, at(4))
    sell(db, "order-rejected", 5)
    apply_ack(db, parse_ack(b'{"order_id": "order-rejected", "result": "rejected", '
                            b'"reason": "central stock has 0 left"}'), KIT, moment(6))
    sell(db, "order-unsettled", 7)
    sweep(db, KIT, moment(100), mismatch_after=10, refund_after=1000, resend_after=1000)
    sweep(db, KIT, moment(1007), mismatch_after=10, refund_after=1000, resend_after=1000)
    mode = Mode(uplink_configured=True)
    mode.set_latch(True)
    outbox.record_event(db, {"type": "mode", "state": mode.state, "reasons": mode.reasons},
                        KIT, at(1008))
    found = outbox_payloads(db)
    db.close()

    assert [m["type"] for m in found["orders"]] == ["sale", "void", "sale", "refund", "sale",
                                                    "sale"]
    assert [m["event"]["type"] for m in found["events"]] == [
        "order_rejected", "mismatch", "refund_due", "mode"]
    for topic, messages in found.items():
        for message in messages:
            validators[topic].validate(message)

    must_carry = {"sale": ["lines", "total_cents", "payment", "trace_id", "status"],
                  "void": ["voids_seq", "reason"],
                  "refund": ["refunds_seq", "restock", "reason", "total_cents"]}
    for message in found["orders"]:
        for name in ["msg_id", "receipt", "created_at", *must_carry[message["type"]]]:
            assert not validators["orders"].is_valid(
                {k: v for k, v in message.items() if k != name}), (message["type"], name)
        receipt = message["receipt"]
        for name in ("prev", "body"):
            assert not validators["orders"].is_valid({**message, "receipt": {
                k: v for k, v in receipt.items() if k != name}}), name
    # Each message carries its link whole: HQ recomputes every hash over the one before it.
    prev = GENESIS_HASH
    for message in found["orders"]:
        receipt = message["receipt"]
        assert receipt["prev"] == prev and chain_hash(prev, receipt["body"]) == receipt["hash"]
        prev = receipt["hash"]
    for message in found["events"]:
        event = message["event"]
        must = {"order_rejected": ["order_id", "reason"], "mismatch": ["order_id", "sold_at"],
                "refund_due": ["order_id"], "mode": ["state", "reasons"]}[event["type"]]
        for name in must:
            assert not validators["events"].is_valid(
                {**message, "event": {k: v for k, v in event.items() if k != name}}), name
        assert not validators["events"].is_valid({**message, "event": {**event,
                                                                        "type": "no-such"}})
