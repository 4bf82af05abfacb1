"""Two ``dropkit hq`` in one ``--shared-group`` on one central ledger, against a real Mosquitto
and a real kit: they share the kit's orders, and when one is killed the other takes its share."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys

from agent.hq.group import AdoptedSession, Group
from tests.conftest import write_manifest
from tests.mqtt_helpers import Broker, Hq, kit_config, wait_for


def shared_hq(broker: Broker, db: str, client_id: str) -> Hq:
    """An HQ instance of group ``hq``; a message ahead of a missing link would be held longer
    than this test runs, so any link that does not come in time leaves orders unsettled."""
    hq = Hq(broker, db)
    hq.extra_args = ["--shared-group", "hq", "--client-id", client_id, "--hold-s", "300"]
    return hq.start()


def applied(hq: Hq) -> int:
    """Sales this instance applied to the ledger (its log says ``kit K order O accepted``)."""
    return sum(" order " in line and " accepted" in line for line in hq.log)


def test_two_hq_instances_share_a_kit_and_survive_a_kill_9(kit_factory, tmp_path,
                                                          hq_ledger) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()
    db = hq_ledger
    hq_a = shared_hq(broker, db, "hq-a")
    hq_b = shared_hq(broker, db, "hq-b")
    manifest = write_manifest(tmp_path / "stock.toml", [("A-1", "Item A", 250, 100_000)])
    kit = kit_factory(tmp_path / "state", kit_config(tmp_path / "agent.toml", broker, manifest))
    ids: list[str] = []

    def sell(n: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: kit.place([{"sku": "A-1", "qty": 1}]), range(n)))
        assert {a.status for a in answers} == {201}, [a.data for a in answers if a.status != 201]
        ids.extend(a.data["order_id"] for a in answers)

    def at_hq() -> int:
        return hq_a.query("SELECT count(*) FROM sales")[0][0]

    store = kit.open_store()

    def all_reconciled() -> bool:
        return store.execute("SELECT count(*) FROM orders WHERE status = 'reconciled'"
                             ).fetchone()[0] == len(ids)

    # Both up: each message goes to one of them (no repeats), and both apply a share.
    sell(200)
    wait_for(lambda: at_hq() == 200, 60, "200 sales at HQ")
    wait_for(all_reconciled, 60, "200 orders reconciled at the kit")
    assert hq_a.query("SELECT value FROM counters WHERE name = 'duplicates'") == []
    shares = applied(hq_a), applied(hq_b)
    print(f"both up: hq-a applied {shares[0]}, hq-b {shares[1]}")
    assert sum(shares) == 200 and min(shares) >= 20, shares

    # kill -9 one mid-stream: the broker keeps dealing it every other message, which the other
    # drains by adopting its session.
    with concurrent.futures.ThreadPoolExecutor(1) as seller:
        selling = seller.submit(sell, 300)
        wait_for(lambda: at_hq() >= 260, 60, "selling again")
        hq_a.kill()
        killed_at = applied(hq_b)
        selling.result()
    wait_for(lambda: at_hq() == 500, 60, "500 sales at HQ")
    wait_for(all_reconciled, 60, "500 orders reconciled at the kit")
    assert any("adopting the session of HQ instance hq-a" in line for line in hq_b.log)
    assert applied(hq_b) > killed_at

    # hq-a comes back and takes its session back (once: hq-b does not take it again), and both
    # share again.
    hq_a = shared_hq(broker, db, "hq-a")
    b_before = applied(hq_b)
    sell(100)
    wait_for(lambda: at_hq() == 600, 60, "600 sales at HQ")
    wait_for(all_reconciled, 60, "600 orders reconciled at the kit")
    assert applied(hq_a) > 0 and applied(hq_b) > b_before
    assert sum("HQ connected" in line for line in hq_a.log) == 1, "".join(hq_a.log)
    assert sum("adopting the session" in line for line in hq_b.log) == 1, "".join(hq_b.log)

    # Exactly once each, the whole receipt chain, nothing held, nothing for a person to see.
    sales = hq_a.query("SELECT order_id, count(*) FROM sales GROUP BY order_id")
    assert len(sales) == 600 and {n for _, n in sales} == {1}
    assert {order_id for order_id, _ in sales} == set(ids)
    assert hq_a.query("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM links") \
        == [(600, 600, 1, 600)]
    assert hq_a.query("SELECT count(*) FROM held") == [(0,)]
    report = subprocess.run([sys.executable, "-m", "agent", "hq", "report", "--db", db],
                            capture_output=True, text=True, timeout=30)
    assert (report.returncode, report.stdout) == (0, "no mismatches\n"), report.stdout
    logs = "".join(hq_a.log + hq_b.log)
    assert "database is locked" not in logs and "Traceback" not in logs, logs[-3000:]
    assert "ignored garbage" not in logs, logs[-3000:]
    store.close()
    assert hq_a.stop() == 0 and hq_b.stop() == 0
    broker.stop()


def test_the_first_online_instance_adopts_the_offline_ones() -> None:
    opened: list[str] = []
    closed: list[str] = []
    sessions: dict[str, AdoptedSession] = {}

    def open_session(peer: str) -> AdoptedSession:
        opened.append(peer)
        sessions[peer] = AdoptedSession(lambda: closed.append(peer))
        return sessions[peer]

    group = Group("hq-b", open_session, retry_s=2.0)
    group.seen("hq-b", "offline", 0.0)  # its own will from an earlier run: not a peer
    group.seen("hq-a", "online", 0.0)
    group.seen("hq-c", "offline", 0.0)
    group.step(2.0)
    assert opened == [], "hq-a is online and comes first: hq-c is its to adopt"
    group.seen("hq-a", "offline", 2.5)
    group.step(3.0)
    assert opened == ["hq-c"], "hq-a may be coming back: not adopted before retry_s"
    group.step(4.5)
    assert opened == ["hq-c", "hq-a"]
    # hq-a comes back: it takes its session (the adopted connection ends), then says online.
    sessions["hq-a"].ended.set()
    group.step(5.0)
    assert closed == ["hq-a"]
    group.step(6.5)
    assert opened == ["hq-c", "hq-a"], "not taken again before retry_s"
    group.seen("hq-a", "online", 6.8)
    group.step(8.0)
    assert opened == ["hq-c", "hq-a"] and closed == ["hq-a", "hq-c"], "hq-c is hq-a's now"
