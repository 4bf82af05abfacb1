"""``dropkit watch``'s board (:class:`agent.ops.watch.Board`): what it shows of each kit from the
messages it saw, in plain words when that may no longer hold, what HQ's instances' ``/metrics``
say (``--hq-url``), and the table it renders (through rich, to text; not a terminal)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from rich.console import Console

from agent.ops.harness import Broker, Hq, free_port, wait_for
from agent.ops.hqview import HqPoller, HqSample, parse_metrics
from agent.ops.watch import STALE_S, Board
from tests.hq_helpers import fleet


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


# -- HQ's /metrics in the board (--hq-url) -------------------------------------------------------

# The example of the text format's documentation (Prometheus, "Exposition formats"), as written.
PROMETHEUS_EXAMPLE = "\n".join([
    "# HELP http_requests_total The total number of HTTP requests.",
    "# TYPE http_requests_total counter",
    'http_requests_total{method="post",code="200"} 1027 1395066363000',
    'http_requests_total{method="post",code="400"}    3 1395066363000',
    "",
    "# Escaping in label values:",
    r'msdos_file_access_time_seconds{path="C:\\DIR\\FILE.TXT",error="Cannot find file:\n'
    r'\"FILE.TXT\""} 1.458255915e9',
    "",
    "# Minimalistic line:",
    "metric_without_timestamp_and_labels 12.47",
    "",
    "# A weird metric from before the epoch:",
    'something_weird{problem="division by zero"} +Inf -3982045', ""])


def test_the_text_format_is_read_as_its_documentation_writes_it() -> None:
    samples = parse_metrics(PROMETHEUS_EXAMPLE)
    assert samples["http_requests_total"] == [({"method": "post", "code": "200"}, 1027.0),
                                              ({"method": "post", "code": "400"}, 3.0)]
    assert samples["msdos_file_access_time_seconds"] == [
        ({"path": "C:\\DIR\\FILE.TXT", "error": 'Cannot find file:\n"FILE.TXT"'}, 1.458255915e9)]
    assert samples["metric_without_timestamp_and_labels"] == [({}, 12.47)]
    assert samples["something_weird"] == [({"problem": "division by zero"}, float("inf"))]
    assert parse_metrics("garbage here\nno_value\nx{a=\"1\"} not-a-number\n") == {}


def test_the_board_shows_what_each_hq_instance_says(tmp_path: Path) -> None:
    """A real ``dropkit hq`` serving /metrics, kits' messages through a real broker (one kit's
    second link ahead of its first: recorded and held, not answered), the poller reading it;
    then HQ stopped."""
    import paho.mqtt.client as mqtt

    broker = Broker(tmp_path / "broker").start()
    port = free_port()
    hq = Hq(broker, tmp_path / "hq.db")
    hq.extra_args = ["--http-port", str(port), "--hold-s", "300"]
    hq.start()
    kits = fleet("kit", 2, 3, lambda k, s: ("ZINE-07", 800))
    sender = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sender.connect("127.0.0.1", broker.port)
    sender.loop_start()
    for payload in kits[0][1]:
        sender.publish("dropkit/kit-00000/orders", payload, qos=1).wait_for_publish(10)
    sender.publish("dropkit/kit-00001/orders", kits[1][1][1], qos=1).wait_for_publish(10)
    board = Board("mqtt://test", [HqSample(f"http://127.0.0.1:{port}")])
    board.connected(time.time())
    for kit_id in ("kit-00000", "kit-00001"):
        board.take(f"dropkit/{kit_id}/status", b"online", time.time())
    poller = HqPoller([sample.url for sample in board.hq_metrics])
    board.hq_metrics = poller.samples
    rounds = threading.Semaphore(0)
    poller.changed = rounds.release
    poller.start()
    try:
        def says(text: str) -> bool:
            assert rounds.acquire(timeout=10), "the poller goes round"
            return text in board.hq_lines(time.time())[1]

        wait_for(lambda: says("4 messages, 3 acks, 0 rejections, 0 duplicates, 0 garbage; "
                              "held 1, missing 0, faults 0; lag at most"), 20,
                 "HQ's counts on the board")
        rows = {row.kit_id: row.at_hq for row in board.rows(time.time())}
        assert rows["kit-00000"].startswith("lag ") and rows["kit-00001"].endswith(" s, held 1"), \
            rows
        text = rendered(board, time.time())
        assert "at HQ" in text and f"HQ http://127.0.0.1:{port}: ledger up; 4 messages" in text
        assert hq.stop() == 0
        wait_for(lambda: says("NOT ANSWERING"), 20, "HQ stopped, said plainly")
        assert "last answered" in board.hq_lines(time.time())[1]
    finally:
        poller.stop()
        sender.loop_stop()
        broker.stop()


def test_watch_takes_only_an_http_address_for_hq() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "agent", "watch", "--hq-url", "file:///etc/passwd",
                           "--once", "0"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (2, "dropkit: --hq-url 'file:///etc/passwd': "
                                                 "expected http://host:port (dropkit hq "
                                                 "--http-port)\n")
