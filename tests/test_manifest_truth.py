"""The store is the one source of truth for the manifest: what staff loaded over HTTP is what a
restarted kit sells, and a configured file that would un-sell stock never stops the start.

Each kit is a ``dropkit sim`` subprocess (the harness's), stopped with SIGTERM and started
again on the same state directory and config, as systemd's ``Restart=always`` would.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from agent.ops.harness import write_config
from tests.conftest import write_manifest


def manifest_events(state: Path) -> list[dict]:
    with sqlite3.connect(state / "dropkit.db") as db:
        return [json.loads(p)["event"] for (p,) in db.execute(
            "SELECT payload FROM outbox WHERE kind = 'event' ORDER BY id")
            if json.loads(p)["event"]["type"] == "manifest_conflict"]


def test_http_manifest_survives_restarts_and_a_conflicting_file_does_not_stop_the_start(
        kit_factory, tmp_path: Path) -> None:
    state, stock = tmp_path / "state", tmp_path / "stock.toml"
    write_manifest(stock, [("ZINE-07", "Zine no. 7", 800, 10)])
    config = write_config(tmp_path / "agent.toml", {"orders": {"manifest": str(stock)}})
    kit = kit_factory(state, config)
    with kit.client() as client:
        assert kit.order(client, [{"sku": "ZINE-07", "qty": 6}]).status_code == 201
        loaded = client.put("/api/staff/manifest", headers=kit.staff, json={
            "version": "over-http", "items": [
                {"sku": "ZINE-07", "name": "Zine no. 7", "price_cents": 800, "qty": 20},
                {"sku": "CAP-01", "name": "Cap", "price_cents": 1500, "qty": 5}]})
        assert loaded.status_code == 200, loaded.text
    assert kit.stop() == 0

    # Restarted with the same (unchanged) file: the manifest loaded over HTTP is served.
    kit = kit_factory(state, config)
    with kit.client() as client:
        served = client.get("/api/manifest").json()
        assert served["version"] == "over-http"
        assert {i["sku"]: i["available"] for i in served["items"]} == \
            {"ZINE-07": 14, "CAP-01": 5}
        health = client.get("/api/health").json()
        assert health["manifest"]["conflict"] is None and health["alerts"] == []
    assert kit.stop() == 0

    # Someone edits the file below what was sold: the start goes on, the stored manifest sells.
    write_manifest(stock, [("ZINE-07", "Zine no. 7", 800, 4)], version="too-small")
    kit = kit_factory(state, config)
    with kit.client() as client:
        assert client.get("/api/manifest").json()["version"] == "over-http"
        assert kit.order(client, [{"sku": "CAP-01", "qty": 1}]).status_code == 201
        health = client.get("/api/health").json()
    assert "manifest_conflict" in health["alerts"]
    assert health["manifest"]["conflict"] == {
        "file": str(stock), "version": "too-small",
        "skus": {"ZINE-07": {"sold": 6, "file_qty": 4}}}
    assert any("ZINE-07 (sold 6, the file allows 4)" in line for line in kit.log)
    assert kit.stop() == 0

    # Still refused after another restart, and said to HQ once, not at every start.
    kit = kit_factory(state, config)
    assert "manifest_conflict" in kit.health()["alerts"]
    with kit.client() as client:
        # Staff load a manifest: that settles it.
        assert client.put("/api/staff/manifest", headers=kit.staff, json={
            "version": "fixed", "items": [
                {"sku": "ZINE-07", "name": "Zine no. 7", "price_cents": 800, "qty": 8}]}
        ).status_code == 200
        health = client.get("/api/health").json()
        assert health["alerts"] == [] and health["manifest"]["conflict"] is None
    assert kit.stop() == 0
    assert [e["skus"] for e in manifest_events(state)] == [["ZINE-07"]]

    # A file that changed again, and fits, is applied at the next start.
    write_manifest(stock, [("ZINE-07", "Zine no. 7", 800, 30)], version="restock")
    kit = kit_factory(state, config)
    manifest = kit.request("GET", "/api/manifest").data
    assert manifest["version"] == "restock" and manifest["items"][0]["available"] == 24
