"""``dropkit hq`` on the broker: :func:`run_hq` subscribes to every kit's ``orders`` with a
persistent session (the broker keeps orders for it while it is down), records each message in
the :class:`~agent.hq.ledger.Ledger` and publishes the kit's ack:
``{"order_id", "result": "accepted" | "rejected", "reason", "trace_id"}``.

The ack is published only after the ledger has committed, and paho acknowledges the message to
the broker only after that, so a crash anywhere repeats work rather than losing it. Several
instances may share the load (``--shared-group``): see :class:`~agent.hq.group.Group`.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from typing import TYPE_CHECKING, Any

from agent.core.manifest import Manifest
from agent.hq.group import AdoptedSession, Group
from agent.hq.ledger import HOLD_S, Ledger
from agent.uplink.mqtt import Will, new_client

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

log = logging.getLogger("dropkit.hq")

SESSION_EXPIRY_S = 7 * 24 * 3600
"""How long the broker keeps an HQ session (and the orders for it) while nobody connects it."""


def run_hq(broker: str, db_path: str, *, stock: Manifest | None = None, hold_s: float = HOLD_S,
           client_id: str = "dropkit-hq", shared_group: str = "", topic_prefix: str = "dropkit",
           username: str = "", password: str = "", ca_file: str = "",
           stop: threading.Event | None = None) -> None:
    """Reconcile until SIGTERM/SIGINT (or ``stop`` is set)."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    ledger = Ledger(db_path, hold_s)
    if stock is not None:
        ledger.load_stock(stock)
        log.info("central stock %s loaded: %d SKUs", stock.version, len(stock.items))
    stop = stop or threading.Event()
    subscription = f"{topic_prefix}/+/orders"
    if shared_group:
        subscription = f"$share/{shared_group}/{subscription}"
    statuses = f"{topic_prefix}/hq/{shared_group}/"

    def message(client, userdata, msg) -> None:
        parts = msg.topic.split("/")
        kit_id = parts[-2] if len(parts) >= 3 else ""
        try:
            data = json.loads(msg.payload)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            acks = ledger.record(kit_id, data)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignored garbage on %s (%s): %r", msg.topic, exc, msg.payload[:100])
            return
        for ack in acks:
            send_ack(client, kit_id, ack)

    def send_ack(client: mqtt.Client, kit_id: str, ack: dict[str, Any]) -> None:
        client.publish(f"{topic_prefix}/{kit_id}/acks", json.dumps(ack), qos=1)

    def session(session_id: str, will: Will | None = None) -> mqtt.Client:
        """A client of the persistent session ``session_id`` (clean start off, so the broker
        keeps orders for it while it is away); connects once its loop starts."""
        built = new_client(broker, client_id=session_id, session_expiry_s=SESSION_EXPIRY_S,
                           username=username, password=password, ca_file=ca_file, will=will)
        client = built.paho
        client.on_message = message
        if group is not None:
            # Every session of the group (an adopted one too) carries the status subscription.
            client.message_callback_add(statuses + "+", lambda c, u, msg: group.seen(
                msg.topic.rsplit("/", 1)[-1], msg.payload.decode("utf-8", "replace")))
        built.connect_async()
        return client

    def adopt(peer: str) -> AdoptedSession:
        client = session(peer)

        def close() -> None:
            client.on_disconnect = None
            client.disconnect()
            client.loop_stop()

        adopted = AdoptedSession(close)

        def disconnected(client, userdata, flags, reason_code, properties) -> None:
            client.loop_stop()  # from its own thread: no reconnect; Group.step decides
            adopted.ended.set()

        client.on_disconnect = disconnected
        client.loop_start()
        return adopted

    group = Group(client_id, adopt) if shared_group else None
    # In a shared group the will tells the others that this instance is offline.
    client = session(client_id, Will(statuses + client_id, "offline") if group else None)

    def connected(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("broker refused HQ: %s", reason_code)
            return
        log.info("HQ connected (session %s); subscribing %s",
                 "resumed" if flags.session_present else "new", subscription)
        if group is None:
            client.subscribe(subscription, qos=1)
            return
        client.subscribe([(subscription, 1), (statuses + "+", 1)])
        client.publish(statuses + client_id, "online", qos=1, retain=True)

    client.on_connect = connected
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    client.loop_start()
    try:
        while not stop.wait(0.5):
            for kit_id, ack in ledger.release_overdue():
                send_ack(client, kit_id, ack)
            if group is not None:
                group.step(time.monotonic())
    finally:
        if group is not None:
            group.close()
        # With a will (in a shared group) the broker publishes it: this instance is offline.
        client.disconnect(ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        client.loop_stop()
        ledger.db.close()
        log.info("HQ stopped")
