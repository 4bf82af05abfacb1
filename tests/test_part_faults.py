"""A fault in the kit's parts beside those of :mod:`tests.test_web_inprocess` and
:mod:`tests.test_uplink_faults`: the storage watch, the power-fail line, the hold sweep, the
retention, the NUT server, and the short jobs of the panel, the durable events and the scanner.

A real :class:`~agent.app.kit.Kit` on the test's loop (the hold sweep's, the retention's and
the NUT server's tests serve it with the daemon's own HTTP server on loopback). The seams: the
file system (a file where the state directory was), another writer of the store (a trigger
that refuses some rows, a count or an id damaged), gpiozero's MockFactory (another holder of
the fail line's pin), a socket (another server on the NUT port), and the simulated panel's
buttons and scanner through the staff page's simulator controls.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.inprocess import Running, eventually, run_logged, running_kit
from tests.test_printing import next_event
from tests.test_web_inprocess import (
    NO_PRINTER,
    fault_is_shown_then_cleared,
    store_exec,
    store_rows,
    tracebacks,
)


async def job_fault_is_shown_then_cleared(k: Running, caplog: pytest.LogCaptureFixture,
                                          part: str, reason: str, act: Callable[[], Any],
                                          repair: Callable[[], object]) -> None:
    """A short job of ``part`` fails (``act`` starts one): degraded with ``reason``, logged
    once, sales go on; after ``repair`` the next job succeeds and the part is running."""
    await act()
    health = await eventually(k.health_when(lambda h: part in h["degraded"]))
    assert health["status"] == "degraded" and reason in health["degraded"][part], health
    assert f"degraded_{part}" in health["alerts"]
    await act()  # the same fault again: shown, not logged again
    failures = health["parts"][part]["failures"]
    await eventually(k.health_when(lambda h: h["parts"][part]["failures"] > failures))
    assert (await k.order(("ZINE-07", 1))).status_code == 201  # sales go on
    repair()
    await act()
    after = await eventually(k.health_when(lambda h: h["parts"][part]["state"] == "running"))
    assert after["status"] == "ready" and after["degraded"] == {}, after
    logged = tracebacks(caplog, part)
    assert len(logged) == 1, [record.getMessage() for record in logged]
    assert reason in logged[0].getMessage()


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux's renameat2 with RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange):
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno), str(a))


def test_storage_watch_cannot_look_at_the_store_until_its_directory_is_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state, away = tmp_path / "kit", tmp_path / "kit.away"

    async def scenario() -> None:
        async with running_kit(state, NO_PRINTER) as k:
            def inject() -> None:
                # A file where the state directory was: the store's path leads nowhere it can
                # be looked at (for a daemon not run as root, a directory it may not read).
                # Swapped in one step: a moment with no path at all is a store removed.
                away.write_text("")
                exchange(state, away)

            def repair() -> None:
                exchange(state, away)
            await fault_is_shown_then_cleared(k, caplog, "storage_watch",
                                              "NotADirectoryError: [Errno 20] Not a directory",
                                              inject, repair, timeout=30)
            # The sale made meanwhile went to the store's open files: it is there.
            assert store_rows(state, "SELECT count(*) FROM orders") == [(1,)]
            assert (await k.health())["storage"]["state"] == "ok"
    state.mkdir()
    run_logged(scenario, caplog)


def test_a_panel_action_that_fails_shows_against_the_panel_until_one_works(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path) as k:
            assert (await k.order(("PIN-LOGO", 1))).status_code == 201  # a receipt to reprint
            await eventually(lambda: store_rows(tmp_path, "SELECT state FROM print_jobs") ==
                             [("printed",)], timeout=10)
            store_exec(tmp_path, "CREATE TRIGGER jam BEFORE INSERT ON print_jobs WHEN "
                                 "NEW.kind = 'reprint' BEGIN SELECT RAISE(ABORT, 'reprints "
                                 "jammed'); END;")

            async def press_reprint() -> None:
                answer = await k.http.post("/api/staff/sim/button", headers=k.staff,
                                           json={"button": "reprint"})
                assert answer.status_code == 200, answer.text
            await job_fault_is_shown_then_cleared(
                k, caplog, "panel", "IntegrityError: reprints jammed", press_reprint,
                lambda: store_exec(tmp_path, "DROP TRIGGER jam"))
            # The button works again: once the later sale's receipt printed, a copy of it.
            await eventually(lambda: store_rows(tmp_path, "SELECT state FROM print_jobs") ==
                             [("printed",)] * 2, timeout=10)
            await press_reprint()
            await eventually(lambda: store_rows(
                tmp_path, "SELECT count(*) FROM print_jobs WHERE kind = 'reprint'") == [(1,)])
    run_logged(scenario, caplog)


def test_a_durable_event_the_store_refuses_shows_against_events_until_one_is_written(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            store_exec(tmp_path, "CREATE TRIGGER jam BEFORE INSERT ON outbox WHEN "
                                 "NEW.kind = 'event' BEGIN SELECT RAISE(ABORT, 'events "
                                 "jammed'); END;")
            latched = False

            async def toggle_the_latch() -> None:  # each change of mode is a durable event
                nonlocal latched
                latched = not latched
                answer = await k.http.post("/api/staff/mode", headers=k.staff,
                                           json={"offline": latched})
                assert answer.status_code == 200, answer.text
            await job_fault_is_shown_then_cleared(
                k, caplog, "events", "IntegrityError: events jammed", toggle_the_latch,
                lambda: store_exec(tmp_path, "DROP TRIGGER jam"))
            # The sale's own outbox row was never refused: only events were.
            assert store_rows(tmp_path, "SELECT count(*) FROM outbox WHERE kind = 'sale'") \
                == [(1,)]
    run_logged(scenario, caplog)


@pytest.fixture
def mock_pins() -> Iterator[Any]:
    """gpiozero's MockFactory as the process's default pin factory (the kit's fail line
    opens on it, as on a Pi it opens on the real one)."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    before, Device.pin_factory = Device.pin_factory, MockFactory()
    try:
        yield Device.pin_factory
    finally:
        Device.pin_factory.close()
        Device.pin_factory = before


def test_a_fail_line_held_by_another_is_degraded_then_runs_once_it_is_free(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, mock_pins: Any) -> None:
    from gpiozero import DigitalInputDevice

    holder = DigitalInputDevice(6, pin_factory=mock_pins)  # another user of GPIO 6

    async def scenario() -> None:
        async with running_kit(tmp_path, {**NO_PRINTER, "power": {"fail_gpio": 6}}) as k:
            health = await eventually(k.health_when(
                lambda h: "power_fail_line" in h["degraded"]))
            assert "GPIOPinInUse" in health["degraded"]["power_fail_line"], health["degraded"]
            assert health["parts"]["power"]["state"] == "running"
            assert (await k.order(("ZINE-07", 1))).status_code == 201  # sales go on
            holder.close()
            after = await eventually(k.health_when(
                lambda h: h["parts"]["power_fail_line"]["state"] == "running"), timeout=15)
            assert after["status"] == "ready" and after["degraded"] == {}, after
            with k.kit.listen() as events:  # and the line works: on battery at its edge
                mock_pins.pin(6).drive_high()
                while "OB" not in (await next_event(events, "power"))["state"].split():
                    pass
    run_logged(scenario, caplog)
    assert len(tracebacks(caplog, "power_fail_line")) == 1


def test_the_hold_sweep_fails_on_a_damaged_stock_count_until_it_is_mended(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        # A reservation holds its stock for 3 s (hold_minutes' least), then the sweep ends it.
        async with running_kit(tmp_path, {**NO_PRINTER, "orders": {"hold_minutes": 0.05}},
                               loopback=True) as k:
            held = await k.order(("PIN-LOGO", 1), staff=False)
            assert held.status_code == 201, held.text
            order_id = held.json()["order_id"]

            def inject() -> None:
                # The store's count of held units lost (another writer, a flipped bit): giving
                # the reservation's unit back would make it negative, which its CHECK refuses.
                store_exec(tmp_path, "UPDATE items SET held = 0 WHERE sku = 'PIN-LOGO'")

            def repair() -> None:
                store_exec(tmp_path, "UPDATE items SET held = 1 WHERE sku = 'PIN-LOGO'")
            await fault_is_shown_then_cleared(k, caplog, "holds",
                                              "IntegrityError: CHECK constraint failed", inject,
                                              repair)
            # Mended, the sweep ends the reservation and its unit is on sale again.
            async def expired() -> bool:
                view = (await k.http.get(f"/api/orders/{order_id}")).json()
                return view["status"] == "expired"
            await eventually(expired)
            assert store_rows(tmp_path, "SELECT held FROM items WHERE sku = 'PIN-LOGO'") == [(0,)]
    run_logged(scenario, caplog)


def test_retention_fails_while_the_store_refuses_to_forget_then_prunes_again(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        # A retention of one second: a round every second prunes the printed receipts' jobs
        # (all but the newest, whose id is never given out again).
        async with running_kit(tmp_path, {"kit": {"id": "kit-inproc",
                                                  "retention_days": 1 / 86400}},
                               loopback=True) as k:
            async def inject() -> None:
                # Another writer's trigger refuses every delete of a print job.
                store_exec(tmp_path, "CREATE TRIGGER keep BEFORE DELETE ON print_jobs BEGIN "
                                     "SELECT RAISE(ABORT, 'print jobs kept'); END;")
                for _ in range(2):
                    assert (await k.order(("PIN-LOGO", 1))).status_code == 201
            await fault_is_shown_then_cleared(k, caplog, "retention",
                                              "IntegrityError: print jobs kept", inject,
                                              lambda: store_exec(tmp_path, "DROP TRIGGER keep"))
            # It prunes again: three receipts printed, the newest job kept.
            await eventually(lambda: store_rows(
                tmp_path, "SELECT count(*), max(id) FROM print_jobs") == [(1, 3)], timeout=15)
    run_logged(scenario, caplog)


def test_a_nut_port_another_server_holds_is_degraded_then_served_once_it_is_free(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    holder = socket.create_server(("127.0.0.1", 0))  # another upsd on the kit's NUT port
    port = holder.getsockname()[1]

    async def scenario() -> None:
        async with running_kit(tmp_path, {**NO_PRINTER, "nut": {"enabled": True,
                                                                 "port": port}},
                               loopback=True) as k:
            health = await eventually(k.health_when(lambda h: "nut" in h["degraded"]))
            assert health["status"] == "degraded" and "degraded_nut" in health["alerts"]
            assert "address already in use" in health["degraded"]["nut"], health["degraded"]
            # It is tried again and again meanwhile, and said once.
            await eventually(k.health_when(lambda h: h["parts"]["nut"]["failures"] >= 3))
            assert (await k.order(("ZINE-07", 1))).status_code == 201  # sales go on
            holder.close()
            after = await eventually(k.health_when(
                lambda h: h["parts"]["nut"]["state"] == "running"), timeout=15)
            assert after["status"] == "ready" and after["degraded"] == {}, after
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                writer.write(b"LIST UPS\n")
                async with asyncio.timeout(10):
                    assert await reader.readline() == b"BEGIN LIST UPS\n"
                    assert (await reader.readline()).startswith(b"UPS kit ")
            finally:
                writer.close()
    try:
        run_logged(scenario, caplog)
    finally:
        holder.close()
    logged = tracebacks(caplog, "nut")
    assert len(logged) == 1, [record.getMessage() for record in logged]
    assert "address already in use" in logged[0].getMessage()


def test_a_scan_the_store_cannot_read_shows_against_the_scanner_until_one_is_routed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with running_kit(tmp_path, NO_PRINTER) as k:
            held = await k.order(("PIN-LOGO", 1), staff=False)
            assert held.status_code == 201, held.text
            order_id, code = held.json()["order_id"], held.json()["reservation"]["code"]
            # A flipped byte in the reservation's order id: it is no longer UTF-8, and the
            # lookup of its pickup code cannot read it.
            store_exec(tmp_path, "UPDATE holds SET order_id = CAST(x'6f72ff' AS TEXT) "
                                 f"WHERE order_id = '{order_id}'")

            async def scan_the_pickup_code() -> None:  # each scan is routed as a job
                answer = await k.http.post("/api/staff/sim/scan", headers=k.staff,
                                           json={"text": f"PICKUP-{code}"})
                assert answer.status_code == 200, answer.text
            with k.kit.listen() as events:
                await job_fault_is_shown_then_cleared(
                    k, caplog, "scanner", "OperationalError: Could not decode to UTF-8",
                    scan_the_pickup_code, lambda: store_exec(
                        tmp_path, f"UPDATE holds SET order_id = '{order_id}' "
                                  f"WHERE code = '{code}'"))
                # The scan after the repair was routed: the staff page hears which order.
                assert await next_event(events, "scan") == {"kind": "pickup", "code": code,
                                                             "order_id": order_id}
    run_logged(scenario, caplog)
