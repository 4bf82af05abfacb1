"""The middle layer in one process: a real Kit (``dropkit sim`` wiring) behind ``build_app``.

Each test runs its scenario with ``asyncio.run`` as the rest of the suite does; the kit, its
store, its simulators and its supervised parts all live on that loop. Faults are made the way
the field makes them: a bus that throws, a store another writer has changed, a device that
fails, a broker. Waits have deadlines (``eventually``); nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.ops.harness import Broker
from tests.inprocess import Running, eventually, running_kit
from tests.test_printing import next_event

NO_PRINTER = {"printer": {"enabled": False}}


def run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


def stock(manifest: dict[str, Any], sku: str) -> int:
    return next(item["available"] for item in manifest["items"] if item["sku"] == sku)


def store_rows(state_dir: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the kit's store beside it, as an operator with sqlite3 would (the oracle)."""
    db = sqlite3.connect(state_dir / "dropkit.db", timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def store_exec(state_dir: Path, sql: str) -> None:
    """Another writer changes the kit's store (a fault from outside the agent)."""
    db = sqlite3.connect(state_dir / "dropkit.db", timeout=30)
    try:
        db.executescript(sql)
    finally:
        db.close()


# -- the middle layer over HTTP --------------------------------------------------------------


def test_health_is_ready_with_every_part_running(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path) as k:
            expected = {"printer", "scanner", "power", "power_rig"}
            assert expected <= set(k.kit.supervisor.parts)
            health = await eventually(k.health)
            assert health["status"] == "ready" and health["degraded"] == {}
            assert health["alerts"] == [] and health["simulated"] is True
            assert health["kit_id"] == "kit-inproc"
            assert set(health["parts"]) == set(k.kit.supervisor.parts)
            for name in expected:
                assert health["parts"][name] == {"state": "running", "reason": "",
                                                 "restarts": 0, "failures": 0}, name
            assert health["manifest"]["version"] == "demo-1"
    run(scenario)


def test_an_order_then_its_retry_then_sold_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            order_id = str(uuid.uuid4())
            first = await k.order(("VINYL-LTD", 2), ("ZINE-07", 1), order_id=order_id)
            assert first.status_code == 201, first.text
            assert first.json()["total_cents"] == 2 * 3200 + 800
            retry = await k.order(("VINYL-LTD", 2), ("ZINE-07", 1), order_id=order_id)
            assert retry.status_code == 200 and retry.json() == first.json()
            # Sold once: the store holds one sale and the stock went down once.
            assert store_rows(tmp_path, "SELECT count(*) FROM orders") == [(1,)]
            assert stock((await k.http.get("/api/manifest")).json(), "VINYL-LTD") == 8
            sold_out = await k.order(("VINYL-LTD", 9))
            assert sold_out.status_code == 409
            assert sold_out.json()["error"] == "sold_out"
            assert sold_out.json()["sku"] == "VINYL-LTD" and "VINYL-LTD" in \
                sold_out.json()["detail"]
            assert store_rows(tmp_path, "SELECT count(*) FROM orders") == [(1,)]
    run(scenario)


def test_staff_endpoints_want_the_kits_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            for method, path in (("GET", "/api/orders"), ("GET", "/api/staff/print-jobs"),
                                 ("POST", "/api/staff/mode"), ("GET", "/api/staff/check")):
                none = await k.http.request(method, path, json={"offline": True})
                assert none.status_code == 401, (path, none.text)
                wrong = await k.http.request(method, path, json={"offline": True},
                                             headers={"Authorization": "Bearer " + "x" * 32})
                assert wrong.status_code == 403 and wrong.json()["error"] == "forbidden", path
            assert (await k.health())["staff_latch"] is False  # nothing refused took effect
            right = await k.http.get("/api/staff/check", headers=k.staff)
            assert right.status_code == 200 and right.json() == {"staff": True}
    run(scenario)


def test_void_refund_and_card_payment(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            base = "/api/staff/orders/{}/{}"
            card = (await k.order(("TEE-BLK-M", 2), method="card")).json()
            assert card["payment"]["status"] == "pending"
            failed = await k.http.post(base.format(card["order_id"], "payment"),
                                       json={"result": "failed"}, headers=k.staff)
            assert failed.status_code == 200 and failed.json()["payment"]["status"] == "failed"
            voided = await k.http.post(base.format(card["order_id"], "void"), json={},
                                       headers=k.staff)
            assert voided.status_code == 200 and voided.json()["status"] == "voided"
            again = await k.http.post(base.format(card["order_id"], "void"), json={},
                                      headers=k.staff)
            assert again.status_code == 409 and again.json()["error"] == "order_closed"
            assert stock((await k.http.get("/api/manifest")).json(), "TEE-BLK-M") == 40

            paid = (await k.order(("TEE-BLK-M", 1), method="card")).json()
            settled = await k.http.post(base.format(paid["order_id"], "payment"),
                                        json={"result": "paid"}, headers=k.staff)
            assert settled.json()["payment"]["status"] == "paid"
            no_void = await k.http.post(base.format(paid["order_id"], "void"), json={},
                                        headers=k.staff)
            assert no_void.status_code == 409 and no_void.json()["error"] == "paid"
            refunded = await k.http.post(base.format(paid["order_id"], "refund"),
                                         json={"restock": True}, headers=k.staff)
            assert refunded.status_code == 200 and refunded.json()["status"] == "refunded"
            assert stock((await k.http.get("/api/manifest")).json(), "TEE-BLK-M") == 40
            assert store_rows(tmp_path, "SELECT status FROM orders ORDER BY created_at") == [
                ("voided",), ("refunded",)]
    run(scenario)


def test_a_manifest_loaded_over_http(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER, manifest="") as k:
            assert (await k.health())["manifest"]["version"] is None
            assert (await k.order(("MUG-01", 1))).status_code == 422
            new = {"version": "fair-2", "items": [
                {"sku": "MUG-01", "name": "Mug", "price_cents": 1200, "qty": 5}]}
            with k.kit.listen() as events:
                loaded = await k.http.put("/api/staff/manifest", json=new, headers=k.staff)
                assert loaded.status_code == 200 and loaded.json()["changed"] is True
                assert (await next_event(events, "manifest"))["version"] == "fair-2"
            assert (await k.health())["manifest"]["version"] == "fair-2"
            assert stock((await k.http.get("/api/manifest")).json(), "MUG-01") == 5
            assert (await k.order(("MUG-01", 5))).status_code == 201
            bad = await k.http.put("/api/staff/manifest", json={"version": "x"},
                                   headers=k.staff)
            assert bad.status_code == 422 and bad.json()["error"] == "invalid_manifest"
            unauthorised = await k.http.put("/api/staff/manifest", json=new)
            assert unauthorised.status_code == 401
    run(scenario)


def test_the_staff_latch_shows_in_health_and_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            set_ = await k.http.post("/api/staff/mode", json={"offline": True},
                                     headers=k.staff)
            assert set_.status_code == 200 and "staff_latch" in set_.json()["reasons"]
            health = await k.health()
            assert health["staff_latch"] is True and health["mode"] == "offline"
            assert "staff_latch" in health["mode_reasons"]
        async with running_kit(tmp_path, NO_PRINTER) as k:
            assert (await k.health())["staff_latch"] is True
            released = await k.http.post("/api/staff/mode", json={"offline": False},
                                         headers=k.staff)
            assert "staff_latch" not in released.json()["reasons"]
            assert (await k.health())["staff_latch"] is False
    run(scenario)


def test_a_receipt_cut_short_by_a_crash_is_listed_then_checked(tmp_path: Path) -> None:
    async def scenario() -> None:
        printer = {"printer": {"status_interval_s": 0.2}}
        async with running_kit(tmp_path, printer) as k:
            assert (await k.http.get("/api/staff/print-jobs", headers=k.staff)).json() == {
                "unsure": []}
            paper = await k.http.post("/api/staff/sim/paper", json={"level": "out"},
                                      headers=k.staff)
            assert paper.status_code == 200
            await eventually(lambda: "printer_paper_out" in k.kit.coordinator.state.alerts)
            sale = (await k.order(("ZINE-07", 1))).json()
        # The kit died while the receipt was on its way to the printer.
        store_exec(tmp_path, "UPDATE print_jobs SET state = 'sending'")
        async with running_kit(tmp_path, printer) as k:
            async def unsure() -> list[dict[str, Any]]:
                jobs = await k.http.get("/api/staff/print-jobs", headers=k.staff)
                return jobs.json()["unsure"]
            jobs = await eventually(unsure)
            assert [job["order_id"] for job in jobs] == [sale["order_id"]]
            job_id = jobs[0]["id"]
            checked = await k.http.post(f"/api/staff/print-jobs/{job_id}/checked",
                                        headers=k.staff)
            assert checked.status_code == 200 and checked.json()["state"] == "checked"
            assert (await unsure()) == []
            twice = await k.http.post(f"/api/staff/print-jobs/{job_id}/checked",
                                      headers=k.staff)
            assert twice.status_code == 409 and twice.json()["error"] == "not_unsure"
            assert store_rows(tmp_path, "SELECT state FROM print_jobs WHERE id = ?",
                              job_id) == [("checked",)]
    run(scenario)


def test_pulling_the_simulated_mains_shows_on_battery(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            await eventually(lambda: on_power(k, "OL"), timeout=5)
            with k.kit.listen() as events:
                pulled = await k.http.post("/api/staff/sim/power",
                                           json={"action": "pull_mains"}, headers=k.staff)
                assert pulled.status_code == 200 and pulled.json()["mains_present"] is False
                async with asyncio.timeout(5):  # first OL DISCHRG, then OB DISCHRG
                    while "OB" not in (await next_event(events, "power"))["state"].split():
                        pass
            await eventually(lambda: on_power(k, "OB"), timeout=5)
            assert (await k.health())["power"]["feeding"] == "battery"
            assert (await k.order(("ZINE-07", 1))).status_code == 201  # sales go on
            await k.http.post("/api/staff/sim/power", json={"action": "restore_mains"},
                              headers=k.staff)
            await eventually(lambda: on_power(k, "OL"), timeout=5)
            refused = await k.http.post("/api/staff/sim/power", json={"action": "melt"},
                                        headers=k.staff)
            assert refused.status_code == 422
    run(scenario)



def test_simulator_controls_refuse_what_the_rig_cannot_be(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            for body in ({"action": "load", "amps": int("9" * 400)},  # float() overflows
                         {"action": "load", "amps": -1},
                         {"action": "mains_volts", "volts": -5},
                         {"action": "scenario", "name": "live", "speed": 0},
                         {"action": "scenario", "name": "live", "speed": 1e6}):
                answer = await k.http.post("/api/staff/sim/power", json=body,
                                           headers=k.staff)
                assert answer.status_code == 422, (body, answer.text)
            pressed = await k.http.post("/api/staff/sim/button", headers=k.staff,
                                        json={"button": "nope", "long": True})
            assert pressed.status_code == 422 and "unknown button" in pressed.json()["detail"]
            health = await k.health()
            assert health["status"] == "ready", health["degraded"]  # nothing was spawned
    run(scenario)

async def on_power(k: Running, flag: str) -> bool:
    """Whether /api/health shows the NUT flag (OL, OB) in the power state."""
    return flag in (await k.health())["power"]["state"].split()


# -- a fault in each supervised part ---------------------------------------------------------


def raise_once(error: Exception, real: Callable[..., Any]) -> Callable[..., Any]:
    """``real``, but the first call raises ``error`` (a fault that comes and goes)."""
    calls = 0

    def faulty(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise error
        return real(*args, **kwargs)
    return faulty


def tracebacks(caplog: pytest.LogCaptureFixture, part: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "agent.app.supervisor"
            and record.getMessage().startswith(f"{part} failed:") and record.exc_info]


async def fault_is_shown_then_cleared(k: Running, caplog: pytest.LogCaptureFixture, part: str,
                                      reason: str, inject: Callable[[], Any],
                                      repair: Callable[[], object] = lambda: None,
                                      timeout: float = 10) -> None:
    """Make ``part`` fail with ``inject``; check what staff and the log see, ``repair``, and
    see the part run again (each within ``timeout`` seconds)."""
    await eventually(lambda: k.kit.supervisor.parts.get(part))
    before = (await k.part(part))
    assert before["state"] == "running", before
    with k.kit.listen() as events:
        if inspect.isawaitable(injected := inject()):
            await injected
        health = await eventually(k.health_when(lambda h: part in h["degraded"]), timeout)
        assert health["status"] == "degraded", health
        assert reason in health["degraded"][part], health["degraded"]
        assert f"degraded_{part}" in health["alerts"]
        assert health["parts"][part]["failures"] > before["failures"]
        # The page hears of it on the event stream, not only when it asks.
        async with asyncio.timeout(5):
            while part not in (status := await next_event(events, "status"))["degraded"]:
                pass
        assert status["status"] == "degraded" and reason in status["degraded"][part]
        sale = await k.order(("ZINE-07", 1))
        assert sale.status_code == 201, sale.text  # sales go on
        if inspect.isawaitable(repaired := repair()):
            await repaired
        after = await eventually(
            k.health_when(lambda h: h["parts"][part]["state"] == "running"
                          and h["parts"][part]["restarts"] > before["restarts"]), timeout + 5)
        assert after["status"] == "ready" and after["degraded"] == {}, after
    logged = tracebacks(caplog, part)
    assert len(logged) == 1, [record.getMessage() for record in logged]
    assert reason in logged[0].getMessage()


def test_power_monitor_bus_throws_once(tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            bus = k.kit.power.sim.bus  # the simulated I2C bus the drivers read

            def inject() -> None:
                bus.read_word_data = raise_once(RuntimeError("smbus2 driver bug"),
                                                bus.read_word_data)
            await fault_is_shown_then_cleared(k, caplog, "power",
                                              "RuntimeError: smbus2 driver bug", inject)
            # And it reads the sensors again: new statuses come (seq counts them).
            seq = (await k.health())["power"]["seq"]
            await eventually(k.health_when(lambda h: h["power"]["seq"] > seq + 2))
    caplog.set_level(logging.INFO)
    run(scenario)


def test_power_rig_simulator_throws_once(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            runner = k.kit.power.sim.runner  # the simulated rig's scenario clock

            def inject() -> None:
                runner.advance = raise_once(ValueError("rig clock fault"), runner.advance)
            await fault_is_shown_then_cleared(k, caplog, "power_rig",
                                              "ValueError: rig clock fault", inject)
            rig_s = (await k.health())["power"]["simulated_rig"]["rig_s"]
            await eventually(k.health_when(
                lambda h: h["power"]["simulated_rig"]["rig_s"] > rig_s))  # it moves on again
    caplog.set_level(logging.INFO)
    run(scenario)


def test_printer_queue_store_write_fails_until_repaired(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, {"printer": {"status_interval_s": 0.2}}) as k:
            await eventually(lambda: k.kit.coordinator.state.printer.get("state") == "ready")
            printer = k.kit.devices.sim.printer

            async def inject() -> None:
                # Another writer's trigger refuses every change of a print job: the queue's
                # next step (pending -> sending) fails in the store, as a bad page would. A
                # sale queues a receipt (an INSERT, which the trigger lets through).
                store_exec(tmp_path, "CREATE TRIGGER jam BEFORE UPDATE ON print_jobs "
                                     "BEGIN SELECT RAISE(ABORT, 'print_jobs jammed'); END;")
                assert (await k.order(("PIN-LOGO", 1))).status_code == 201

            await fault_is_shown_then_cleared(k, caplog, "printer",
                                              "IntegrityError: print_jobs jammed", inject,
                                              lambda: store_exec(tmp_path, "DROP TRIGGER jam"))
            # Both receipts (the one that jammed, the sale made while degraded) print, once
            # each. The paper is out before the store says so (a job is 'printed' only once the
            # printer answered a status query behind the cut): wait for the store's word.
            await eventually(lambda: store_rows(tmp_path, "SELECT state FROM print_jobs")
                             == [("printed",)] * 2, timeout=10)
            assert len(printer.receipts) == 2
    caplog.set_level(logging.INFO)
    run(scenario)


def test_scanner_discovery_throws_once(tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, {**NO_PRINTER,
                                          "scanner": {"rescan_interval_s": 0.05}}) as k:
            watcher = k.kit.devices.watcher

            def inject() -> None:  # /dev/input turned unreadable for one look
                watcher.discover = raise_once(PermissionError(13, "Permission denied"),
                                              watcher.discover)
            await fault_is_shown_then_cleared(k, caplog, "scanner",
                                              "PermissionError: [Errno 13] Permission denied",
                                              inject)
            with k.kit.listen() as events:  # and it reads scans again
                answer = await k.http.post("/api/staff/sim/scan", json={"text": "ZINE-07"},
                                           headers=k.staff)
                assert answer.status_code == 200
                assert await next_event(events, "scan") == {"kind": "sku", "sku": "ZINE-07"}
    caplog.set_level(logging.INFO)
    run(scenario)


def test_uplink_reconcile_sweep_fails_in_the_store_until_repaired(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, mosquitto: str) -> None:
    broker = Broker(tmp_path / "broker").start()

    async def scenario() -> None:
        # No HQ answers: a relayed sale is sent again after resend_after_s.
        mqtt = broker.kit_mqtt(resend_after_s=0.2, reconcile_check_s=0.05)
        async with running_kit(tmp_path / "kit", {**NO_PRINTER, "mqtt": mqtt}) as k:
            uplink_parts = {"uplink", "uplink_drain", "telemetry", "uplink_health",
                            "reconcile", "uplink_keepalive"}
            await eventually(lambda: uplink_parts <= set(k.kit.supervisor.parts))
            await eventually(k.health_when(lambda h: h["uplink"]["state"] == "connected"))

            async def inject() -> None:
                # Another writer's trigger refuses the resend's update: the sweep fails once
                # the sale below is relayed and left unanswered for resend_after_s.
                store_exec(tmp_path / "kit", "CREATE TRIGGER jam BEFORE UPDATE OF resends ON "
                           "orders BEGIN SELECT RAISE(ABORT, 'resends jammed'); END;")
                assert (await k.order(("TEE-BLK-L", 1))).status_code == 201
            await fault_is_shown_then_cleared(
                k, caplog, "reconcile", "IntegrityError: resends jammed", inject,
                lambda: store_exec(tmp_path / "kit", "DROP TRIGGER jam"))
            # Repaired, the sweep sends the lost sales again.
            await eventually(lambda: store_rows(
                tmp_path / "kit", "SELECT 1 FROM orders WHERE resends > 0"), timeout=10)
            health = await k.health()
            assert {health["parts"][name]["state"] for name in uplink_parts} == {"running"}
    caplog.set_level(logging.INFO)
    tmp_path.joinpath("kit").mkdir()
    try:
        run(scenario)
    finally:
        broker.stop()


def test_a_part_that_fails_at_every_start_stays_degraded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        # A power-fail line on GPIO 6: this machine has no GPIO, so that part cannot start.
        sections = {**NO_PRINTER, "power": {"fail_gpio": 6}}
        async with running_kit(tmp_path, sections) as k:
            with k.kit.listen() as events:
                seen: list[dict[str, Any]] = []

                async def watch() -> None:
                    while True:
                        seen.append(await next_event(events, "status", timeout=60))
                watching = asyncio.create_task(watch())
                # Backoff 0.05, 0.1, 0.2, 0.4 s...: by the 5th restart it has waited longer
                # than settle_s (0.3 s) between two failed starts.
                await eventually(k.health_when(
                    lambda h: h["parts"]["power_fail_line"]["restarts"] >= 5), timeout=10)
                watching.cancel()
            health = await k.health()
            assert health["status"] == "degraded"
            assert "BadPinFactory" in health["degraded"]["power_fail_line"]
            assert health["parts"]["power"]["state"] == "running"  # the sensors are still read
            assert [status["status"] for status in seen if status["status"] != "degraded"] \
                == [], seen
            assert len(tracebacks(caplog, "power_fail_line")) == 1
    caplog.set_level(logging.INFO)
    run(scenario)
