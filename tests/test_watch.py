"""``dropkit watch``'s board (:class:`agent.ops.watch.Board`): what it shows of each kit from the
messages it saw, in plain words when that may no longer hold, and the table it renders (through
rich, to text; not a terminal)."""

from __future__ import annotations

import json

from rich.console import Console

from agent.ops.watch import STALE_S, Board


def event(board: Board, kit: str, now: float, **fields: object) -> None:
    board.take(f"dropkit/{kit}/events", json.dumps(
        {"type": "event", "kit_id": kit, "ts": "t", "msg_id": 1, "event": fields}).encode(), now)


def telemetry(board: Board, kit: str, now: float, queue_depth: int) -> None:
    board.take(f"dropkit/{kit}/telemetry/power", json.dumps(
        {"kit_id": kit, "state": "OL", "feeding": "mains", "mode": "online",
         "queue_depth": queue_depth, "ups": {"percent": 81.6}}).encode(), now)


def rendered(board: Board, now: float) -> str:
    console = Console(record=True, width=240, color_system=None)
    console.print(board.table(now))
    return console.export_text()


def test_a_lost_broker_is_said_plainly_and_every_kit_is_unknown_until_heard_again() -> None:
    board = Board("mqtt://127.0.0.1:1883")
    assert board.headline(0.0) == "connecting to mqtt://127.0.0.1:1883 ..."
    board.connected(10.0)
    board.take("dropkit/kit-a/status", b"online", 11.0)
    telemetry(board, "kit-a", 11.0, queue_depth=0)
    board.take("dropkit/hq/dropkit-hq", b"online", 11.0)
    [row] = board.rows(12.0)
    assert (row.status, row.fresh, row.queue_depth, row.battery) == ("online", True, "0", "82%")
    assert board.hq_line() == "HQ: dropkit-hq online"

    board.lost(20.0)
    text = rendered(board, 27.0)
    assert "BROKER LOST 7 s ago: mqtt://127.0.0.1:1883 does not answer" in text
    assert "unknown (last heard online 16 s ago)" in text
    [row] = board.rows(27.0)
    assert not row.fresh and row.queue_depth == "0"  # what it last said, marked as such
    board.lost(25.0)  # told again: the outage still began at 20
    assert board.headline(27.0).startswith("BROKER LOST 7 s ago")

    # Back: retained statuses are gone with a broker that forgot; a kit not heard since is
    # said to be so, and so is HQ.
    board.connected(30.0)
    assert board.headline(32.0) == "mqtt://127.0.0.1:1883: connected again 2 s ago"
    assert board.rows(32.0)[0].status == \
        "not heard since the broker came back (last heard online 21 s ago)"
    assert board.hq_line() == "HQ: no instance heard"
    board.take("dropkit/kit-a/status", b"online", 33.0)
    telemetry(board, "kit-a", 33.0, queue_depth=6)
    [row] = board.rows(34.0)
    assert (row.status, row.fresh, row.queue_depth) == ("online", True, "6")


def test_a_kit_silent_for_long_is_stale() -> None:
    board = Board()
    board.connected(0.0)
    board.take("dropkit/kit-a/status", b"online", 1.0)
    assert board.rows(1.0 + STALE_S)[0].status == "online"
    row = board.rows(2.0 + STALE_S)[0]
    assert row.status == f"stale (last heard online {STALE_S + 1:.0f} s ago)" and not row.fresh
    assert "stale (last heard online" in rendered(board, 2.0 + STALE_S)


def test_a_lasting_alert_is_shown_until_the_event_that_ends_it() -> None:
    board = Board()
    board.connected(0.0)
    event(board, "kit-a", 1.0, type="paper_out")
    event(board, "kit-a", 1.0, type="sensor_fault", sensor="gauge", error="no answer")
    event(board, "kit-a", 1.0, type="sensor_fault", sensor="mains", error="no answer")
    event(board, "kit-a", 1.0, type="order_rejected", order_id="o-1", reason="sold out")
    assert board.rows(2.0)[0].alerts == \
        "paper_out; sensor_fault gauge; sensor_fault mains; order_rejected o-1"
    event(board, "kit-a", 3.0, type="printer_ready")
    event(board, "kit-a", 3.0, type="sensor_recovered", sensor="gauge", down_s=2.0)
    assert board.rows(4.0)[0].alerts == "sensor_fault mains; order_rejected o-1"
    # The printer's other faults are about the printer too; the latest one is shown.
    event(board, "kit-a", 5.0, type="cover_open")
    event(board, "kit-a", 5.0, type="printer_offline")
    assert board.rows(6.0)[0].alerts == "sensor_fault mains; printer_offline; order_rejected o-1"
    # A shutdown pending, then cancelled; a shutdown, then the kit started again.
    event(board, "kit-a", 7.0, type="shutdown_pending")
    assert "shutdown_pending" in board.rows(7.0)[0].alerts
    event(board, "kit-a", 8.0, type="shutdown_cancelled")
    assert "shutdown" not in board.rows(8.0)[0].alerts
    event(board, "kit-a", 9.0, type="shutdown")
    assert "shutdown" in board.rows(9.0)[0].alerts
    board.take("dropkit/kit-a/status", b"online", 10.0)
    assert "shutdown" not in board.rows(10.0)[0].alerts


def test_garbage_changes_nothing_but_when_the_kit_was_heard() -> None:
    board = Board()
    board.connected(0.0)
    board.take("dropkit/kit-a/status", b"online", 1.0)
    for payload in (b"not json", b"[1, 2]", json.dumps({"event": "x"}).encode()):
        board.take("dropkit/kit-a/events", payload, 2.0)
        board.take("dropkit/kit-a/telemetry/power", payload, 2.0)
    board.take("short", b"online", 2.0)
    [row] = board.rows(3.0)
    assert (row.status, row.alerts, row.queue_depth, row.last_seen) == \
        ("online", "", "?", "1 s ago")
