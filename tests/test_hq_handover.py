"""HQ acknowledges a kit's message to the broker only once the broker has HQ's answer: killed
with SIGKILL after it recorded a batch, it leaves the messages whose answers had not reached
the broker there, and answers them again when it is back. (A kit answered once and then never
again would wait for its resend a minute later, and this test's kits never send again.)

The broker's PUBACKs to HQ come back half a second late through a proxy, so paho's in-flight
window (20 of HQ's answers at a time) holds most of a batch's answers back for seconds: long
enough to kill HQ right after the first answers reached the kits."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path

from agent.hq.intake import Delivery
from agent.hq.server import RECEIVE_MAXIMUM
from agent.ops.harness import Broker, Hq, wait_for
from tests.hq_helpers import fleet
from tests.mqtt_helpers import SlowReturnProxy
from tests.test_hq_instances import Fleet

KITS, SALES = 20, 10
TOPIC = "dropkit/kit-1/orders"


def test_a_batch_is_acknowledged_to_the_broker_only_once_its_answers_are_there(
        tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    # The broker sends HQ a whole burst before HQ acknowledges any: one batch.
    broker.conf.write_text(broker.conf.read_text() + "max_inflight_messages 1000\n")
    broker.start()
    proxy = SlowReturnProxy(broker, delay_s=0.5)
    hq = Hq(proxy, tmp_path / "hq.db").start()  # type: ignore[arg-type]
    sellers = Fleet(broker)
    sellers.publish(fleet("kit", KITS, SALES, lambda k, s: ("SKU", 100)), range(1, SALES + 1))
    wait_for(lambda: sellers.answered() > 0, 30, "the first answers")
    hq.kill()
    first = sellers.answered()
    assert first < KITS * SALES, "HQ was killed too late to show anything"
    hq = Hq(broker, tmp_path / "hq.db").start()
    wait_for(lambda: sellers.answered() == KITS * SALES, 30,
             f"every sale answered after the restart ({first} before the kill)")
    assert all(results == {"accepted"} for results in sellers.answers.values())
    assert hq.query("SELECT count(*), count(DISTINCT order_id) FROM sales") == \
        [(KITS * SALES, KITS * SALES)]
    sellers.client.loop_stop()
    assert hq.stop() == 0
    proxy.close()
    broker.stop()


def test_sales_applied_from_held_are_answered_after_a_kill_before_their_answers_went(
        tmp_path: Path, hq_ledger: str) -> None:
    """A kit's #2 to #30 come before #1 and are held (recorded, acknowledged); #1 comes, and
    HQ applies all 30 in one transaction and publishes their answers, of which paho sends 20
    while the broker's PUBACKs are held back. Killed then, HQ has recorded 30 sales and left
    only #1 unacknowledged: its repeat must answer the other 29 again, or the last 10 are
    never answered (as with three instances killed again and again, tests/test_hq_instances)."""
    broker = Broker(tmp_path / "broker").start()
    proxy = SlowReturnProxy(broker, delay_s=0.0, pubacks_only=True)
    hq = Hq(proxy, hq_ledger).start()  # type: ignore[arg-type]
    sellers = Fleet(broker)
    [kit] = fleet("kit", 1, 30, lambda k, s: ("SKU", 100))
    sellers.publish([kit], range(2, 31))
    wait_for(lambda: hq.query("SELECT count(*) FROM held") == [(29,)], 15, "#2 to #30 held")
    proxy.delay_s = 60.0  # longer than the test: no PUBACK comes back from now on
    sellers.publish([kit], range(1, 2))
    wait_for(lambda: sellers.answered() >= 20, 15, "the answers in paho's window")
    hq.kill()
    assert sellers.answered() < 30, "HQ was killed too late to show anything"
    assert hq.query("SELECT count(*) FROM sales") == [(30,)]
    hq = Hq(broker, hq_ledger).start()
    wait_for(lambda: sellers.answered() == 30, 15, "every sale answered after the restart")
    assert all(results == {"accepted"} for results in sellers.answers.values())
    assert hq.query("SELECT count(*) FROM sales") == [(30,)]
    sellers.client.loop_stop()
    assert hq.stop() == 0
    proxy.close()
    broker.stop()


def test_a_broker_that_takes_answers_late_still_gets_every_message_acknowledged(
        tmp_path: Path) -> None:
    """The broker holds back its PUBACKs to HQ for 11 s (only those: it takes HQ's answers
    late) while HQ holds a whole window of sales (its Receive Maximum, 1000). HQ once waited 10
    s for a batch's answers, then left its messages unacknowledged "for the broker to send
    again"; but a broker sends a message again only at the session's next connection, so on
    this one the 1000 kept their places in the window for good, and HQ was sent nothing more
    (the next sales never came). Every message must be acknowledged once its answers are
    there, however late."""
    broker = Broker(tmp_path / "broker").start()
    proxy = SlowReturnProxy(broker, delay_s=0.0, pubacks_only=True)
    hq = Hq(proxy, tmp_path / "hq.db").start()  # type: ignore[arg-type]
    sellers = Fleet(broker)
    kits = fleet("kit", RECEIVE_MAXIMUM // 20, 21, lambda k, s: ("SKU", 100))
    proxy.delay_s = 11.0
    sellers.publish(kits, range(1, 21))
    wait_for(lambda: sellers.answered() > 0, 20, "the first answers")
    proxy.delay_s = 0.0  # those held stay held: the proxy keeps their order
    wait_for(lambda: sellers.answered() == RECEIVE_MAXIMUM, 30, "the window answered")
    sellers.publish(kits, range(21, 22))
    wait_for(lambda: sellers.answered() == RECEIVE_MAXIMUM + len(kits), 15,
             "the sales after the window answered")
    assert hq.query("SELECT count(*) FROM sales") == [(RECEIVE_MAXIMUM + len(kits),)]
    sellers.client.loop_stop()
    assert hq.stop() == 0
    proxy.close()
    broker.stop()


def test_a_message_is_acknowledged_only_on_the_connection_it_came_by(tmp_path: Path) -> None:
    """A broker restarted without its persistence numbers HQ's messages from 1 again: the
    acknowledgement of message 1 of the old connection, recorded only now, must not go out on
    the new one, where it would acknowledge another message before HQ has recorded it (lost if
    HQ then dies). The proof: that other message comes again when the session resumes. (Sent
    with paho's own ``ack``, as it was, it does not come again: the control at the end.)"""
    from paho.mqtt.publish import single

    from agent.hq.intake import Inbound, Intake
    from agent.uplink.mqtt import new_client

    broker = Broker(tmp_path / "broker").start()

    def send(payload: str) -> None:
        single(TOPIC, payload, qos=1, hostname="127.0.0.1", port=broker.port)

    def session(name: str, stale_ack: Callable[[Inbound, Delivery], object]) -> list[bytes]:
        """Take message ``a``, lose the broker, take ``b``, acknowledge ``a``, die; then what
        the session, resumed by another client, is sent again before ``c``."""
        intake = Intake(None, None, None)  # type: ignore[arg-type]  # only its queue is used
        built = new_client(broker.url, client_id=name, session_expiry_s=3600, manual_ack=True)
        inbound = Inbound(built.paho)
        subscribed = threading.Semaphore(0)
        built.paho.on_message = lambda c, u, msg: intake.deliver(inbound, msg)
        built.paho.on_connect = lambda c, *a: c.subscribe(TOPIC, qos=1)
        built.paho.on_subscribe = lambda *a: subscribed.release()
        built.connect_async()
        built.paho.loop_start()
        assert subscribed.acquire(timeout=10)
        send("a")
        [old] = intake.take(10)
        broker.kill()
        broker.start()  # nothing remembered: HQ's client connects to a new session
        assert subscribed.acquire(timeout=10), "subscribed again"
        assert inbound.connection > old.connection
        send("b")
        [new] = intake.take(10)
        assert (new.payload, new.mid) == (b"b", old.mid), "the same number, another message"
        stale_ack(inbound, old)
        # HQ dies before it recorded b: its connection drops without a word.
        built.paho.loop_stop()
        built.paho.socket().close()
        again: queue.Queue[bytes] = queue.Queue()
        resumed = new_client(broker.url, client_id=name, session_expiry_s=3600)
        resumed.paho.on_message = lambda c, u, msg: again.put(msg.payload)
        resumed.connect_async()
        resumed.paho.loop_start()
        wait_for(resumed.paho.is_connected, 10, "the session resumed")
        send("c")  # comes after anything the session is sent again
        sent_again = []
        while (payload := again.get(timeout=10)) != b"c":
            sent_again.append(payload)
        resumed.paho.loop_stop()
        resumed.paho.disconnect()
        return sent_again

    assert session("guarded", lambda inbound, old: inbound.ack(
        old.connection, old.mid, old.qos)) == [b"b"]
    assert session("paho", lambda inbound, old: inbound.paho.ack(old.mid, old.qos)) == []
    broker.stop()
