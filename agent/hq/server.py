"""``dropkit hq`` on the broker: :func:`run_hq` subscribes to every kit's ``orders`` with a
persistent session (the broker keeps orders for it while it is down), records the messages in
the :class:`~agent.hq.ledger.Ledger` in batches (:class:`~agent.hq.intake.Intake`) and
publishes each kit's ack: ``{"order_id", "result": "accepted" | "rejected", "reason",
"trace_id"}``.

An ack is published only after the ledger has committed, and the message is acknowledged to the
broker (paho's manual ack) only once the broker has the ack, so a crash anywhere repeats work
rather than losing it. Several instances may share the load (``--shared-group``): see
:class:`~agent.hq.group.Group`.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from agent.core.manifest import Manifest
from agent.hq.allocations import Allocations
from agent.hq.group import AdoptedSession, Group
from agent.hq.heard import Heard
from agent.hq.intake import Delivery, Inbound, Intake
from agent.hq.ledger import HOLD_S, Ledger
from agent.hq.metrics import Metrics
from agent.uplink.mqtt import Will, new_client

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger("dropkit.hq")

SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps an HQ session (and the orders for it) while nobody connects it."""
RECEIVE_MAXIMUM = 1000
"""Messages the broker may send a session before the first is acknowledged: what one batch can
take (Mosquitto takes it as its window for the session; its ``max_inflight_messages`` is the
window of a client that announces none)."""
TICK_S = 0.5
STOP_SETTLE_S = 3.0
"""At a stop, how long the answers sent may take to reach the broker before HQ disconnects."""


def status_topic(topic_prefix: str, shared_group: str, client_id: str) -> str:
    """Where an HQ instance says ``online`` (retained, at every connection) and ``offline``
    (its will, and at an orderly stop): ``<prefix>/hq/<client id>``, or in a shared group
    ``<prefix>/hq/<group>/<client id>``. Kits listen to ``<prefix>/hq/#``.

        >>> status_topic("dropkit", "", "dropkit-hq"), status_topic("dropkit", "hq", "hq-1")
        ('dropkit/hq/dropkit-hq', 'dropkit/hq/hq/hq-1')
    """
    return f"{topic_prefix}/hq/{shared_group + '/' if shared_group else ''}{client_id}"


def run_hq(broker: str, db: str, *, stock: Manifest | None = None, hold_s: float = HOLD_S,
           client_id: str = "dropkit-hq", shared_group: str = "", topic_prefix: str = "dropkit",
           username: str = "", password: str = "", ca_file: str = "",
           http_port: int | None = None, http_host: str = "127.0.0.1",
           stop: threading.Event | None = None) -> None:
    """Reconcile until SIGTERM/SIGINT (or ``stop`` is set); ``db`` is a SQLite file's path or a
    ``postgresql://`` URL."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    ledger = Ledger(db, hold_s)
    if stock is not None:
        ledger.load_stock(stock)
        log.info("central stock %s loaded: %d SKUs", stock.version, len(stock.items))
    stop = stop or threading.Event()
    subscription = f"{topic_prefix}/+/orders"
    if shared_group:
        subscription = f"$share/{shared_group}/{subscription}"
    statuses = status_topic(topic_prefix, shared_group, "")
    metrics = Metrics()

    def send_ack(kit_id: str, ack: dict[str, Any]) -> mqtt.MQTTMessageInfo:
        return client.publish(f"{topic_prefix}/{kit_id}/acks", json.dumps(ack), qos=1)

    intake = Intake(ledger, send_ack, metrics)
    allocations, heard = Allocations(ledger.db, topic_prefix), Heard(topic_prefix)
    # The kits' answers to their manifests, acknowledged to the broker once recorded: an answer
    # acknowledged before would be lost to an HQ killed (or a ledger failing) before its record,
    # and the kit does not send it again.
    answers: deque[Delivery] = deque()
    republish = threading.Event()

    def allocate() -> None:
        """The kits' answers recorded, the moves moved on, their manifests published."""
        again = republish.is_set()
        republish.clear()  # a connection made from now on asks again
        try:
            while answers:
                answer = answers[0]
                allocations.answered(answer.topic.split("/")[-3], answer.payload)
                answer.inbound.ack(answer.connection, answer.mid, answer.qos)
                answers.popleft()
            heard.flush(ledger.db)
            publish = allocations.published() if again else []
            publish += allocations.step()
        except ledger.db.transient as exc:
            if again:
                republish.set()
            log.warning("the ledger is not reachable (%s); allocations wait", exc)
            return
        # Handed to paho, a QoS 1 message goes: at once, or once it has connected again.
        for kit_id, payload in publish:
            client.publish(f"{topic_prefix}/{kit_id}/manifest", payload, qos=1, retain=True)

    def session(session_id: str, will: Will | None = None) -> mqtt.Client:
        """A client of the persistent session ``session_id`` (clean start off, so the broker
        keeps orders for it while it is away); connects once its loop starts."""
        built = new_client(broker, client_id=session_id, session_expiry_s=SESSION_EXPIRY_S,
                           username=username, password=password, ca_file=ca_file, will=will,
                           manual_ack=True, receive_maximum=RECEIVE_MAXIMUM)
        paho = built.paho
        inbound = Inbound(paho)
        paho.on_message = lambda c, u, msg: intake.deliver(inbound, msg)

        # What is not an order comes on any session that carries it: the kits' answers to
        # their manifests are acknowledged once recorded (allocate), statuses and telemetry
        # at once.
        def answer(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            answers.append(Delivery(inbound, inbound.connection, msg.mid, msg.qos, msg.topic,
                                    msg.payload))

        def kit_said(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            heard.take(msg.topic, msg.payload, time.time())
            c.ack(msg.mid, msg.qos)

        paho.message_callback_add(f"{topic_prefix}/+/manifest/answer", answer)
        for topic in ("status", "telemetry/power"):
            paho.message_callback_add(f"{topic_prefix}/+/{topic}", kit_said)
        built.connect_async()
        return paho

    def watch_the_group(group: Group) -> mqtt.Client:
        """The group's statuses on a connection of their own (a new session each time): on an
        orders session they would wait behind its backlog, and an instance back for seconds
        would still look offline, its session taken from it again and again."""
        built = new_client(broker, username=username, password=password, ca_file=ca_file)
        built.paho.on_connect = lambda c, u, f, rc, p: c.subscribe(statuses + "+", qos=1)
        built.paho.on_message = lambda c, u, msg: group.seen(
            msg.topic.rsplit("/", 1)[-1], msg.payload.decode("utf-8", "replace"))
        built.connect_async()
        built.paho.loop_start()
        return built.paho

    def adopt(peer: str) -> AdoptedSession:
        adopted_client = session(peer)

        def close() -> None:
            adopted_client.on_disconnect = None
            adopted_client.disconnect()
            adopted_client.loop_stop()

        adopted = AdoptedSession(close)

        def disconnected(client, userdata, flags, reason_code, properties) -> None:
            client.loop_stop()  # from its own thread: no reconnect; Group.step decides
            adopted.ended.set()

        adopted_client.on_disconnect = disconnected
        adopted_client.loop_start()
        return adopted

    group = Group(client_id, adopt) if shared_group else None
    # The will tells the kits (and the group's other instances) that this instance is offline.
    client = session(client_id, Will(statuses + client_id, "offline"))

    def connected(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused HQ: %s", reason_code)
            return
        # Subscribed again at every connection: a broker that restarted without its
        # persistence has forgotten the session (and says so: no session present).
        log.info("HQ connected (session %s); subscribing %s",
                 "resumed" if flags.session_present else "new", subscription)
        client.subscribe([(subscription, 1), (f"{topic_prefix}/+/manifest/answer", 1),
                          (f"{topic_prefix}/+/status", 1),
                          (f"{topic_prefix}/+/telemetry/power", 0)])
        republish.set()  # the kits' manifests, retained, in case the broker forgot them
        # After the subscription (the broker takes a client's packets in order): a kit that
        # hears it knows its sales from now on reach HQ, and sends again what HQ has not
        # answered.
        client.publish(statuses + client_id, "online", qos=1, retain=True)

    client.on_connect = connected
    # The acks' PUBACKs wake the intake, which acknowledges a batch once its acks are there.
    client.on_publish = lambda c, u, mid, reason_code, properties: intake.published(mid)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    web = None
    if http_port is not None:
        from agent.hq.web import serve

        web = serve(ledger, metrics, http_host, http_port)
    client.loop_start()
    watcher = watch_the_group(group) if group is not None else None
    try:
        tick = time.monotonic() + TICK_S
        while not stop.is_set():
            batch = intake.take(max(tick - time.monotonic(), 0.0))
            if batch:
                intake.handle(batch, stop)
            intake.settle()
            if time.monotonic() >= tick:
                intake.release_overdue()
                allocate()
                if group is not None:
                    group.step(time.monotonic())
                tick = time.monotonic() + TICK_S
    finally:
        intake.finish(STOP_SETTLE_S)
        if watcher is not None:
            watcher.loop_stop()
            watcher.disconnect()
        if group is not None:
            group.close()
        # The broker publishes the will: this instance is offline.
        client.disconnect(ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        client.loop_stop()
        if web is not None:
            web.close()
        ledger.close()
        log.info("HQ stopped (%d messages in %d batches, %d held, %.1f s in the ledger, %.1f s "
                 "of CPU)", metrics.value("messages"), metrics.value("batches"), ledger.held,
                 intake.ledger_s, time.process_time())
