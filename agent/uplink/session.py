"""The uplink: the kit's MQTT session with the co-op's broker (paho-mqtt 2.x).

It publishes the durable outbox (:mod:`agent.uplink.drain`); power telemetry at an interval
and at once on every change; ``status`` (retained ``online``, and ``offline`` as the last will
and on an orderly stop). It takes HQ's acks and settles orders with them, and it decides whether
the uplink is healthy enough for the kit to be online (:mod:`agent.uplink.acktimes`). paho runs
on the kit's asyncio loop (:mod:`agent.uplink.paholoop`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from agent.backoff import Backoff
from agent.config import MqttConfig
from agent.core import outbox, reconcile
from agent.core.clock import Moment
from agent.core.mode import Mode
from agent.store import Store
from agent.uplink.acktimes import AckTimes
from agent.uplink.drain import OutboxDrain
from agent.uplink.fromhq import FromHq
from agent.uplink.mqtt import tls_failure
from agent.uplink.paholoop import PahoOnLoop

log = logging.getLogger(__name__)

ACK_SAMPLES = 50
MAX_PACKET_BYTES = 16384
"""The largest MQTT packet the kit takes: MQTT 5's Maximum Packet Size in its CONNECT (the
broker drops bigger ones), and the kit's own check of what paho starts to read
(:func:`agent.uplink.mqtt.new_client`'s bounded reads), for 3.1.1 or a broker that ignores
it."""


STABLE_S = 10.0
"""A connection that lasted this long got through: after it the reconnect backoff starts afresh
and a fault is said again. A broker that drops the kit at once (a message it will not take,
sent again on each connection) is tried ever more slowly, and said once."""

CONNECTION_PART = "uplink"
"""The part that holds the connection: stopped after :meth:`Uplink.goodbye`."""


@dataclass(frozen=True)
class UplinkOutputs:
    """What the uplink reports and asks for, each on the loop.

    - ``publish(kind, data)``: a live event for the staff pages (orders settled, alerts);
    - ``health(view)``: the uplink as ``/api/health`` shows it, at every change;
    - ``telemetry()``: the ``telemetry/power`` payload less ``ts`` and ``seq``;
    - ``spawn(part, job)``: run a short job the kit tracks, as part of ``part``;
    - ``relayed()``: messages left the outbox (the broker acknowledged them);
    - ``allocation(seq, manifest)``: take HQ's allocation; the answer for HQ.
    """

    publish: Callable[[str, dict[str, Any]], object]
    health: Callable[[dict[str, Any]], object]
    telemetry: Callable[[], Awaitable[dict[str, Any]]]
    spawn: Callable[[str, Coroutine[Any, Any, object]], object]
    relayed: Callable[[], object]
    allocation: Callable[[int, Any], Awaitable[dict[str, Any]]]


class Uplink(PahoOnLoop, FromHq):
    """One kit's MQTT session: its :meth:`parts` run supervised on the kit's loop;
    :meth:`goodbye` before the store closes."""

    def __init__(self, config: MqttConfig, kit_id: str, store: Store, mode: Mode,
                 moment: Callable[[], Moment], outputs: UplinkOutputs,
                 password: str = "") -> None:
        from agent.uplink.mqtt import Will, new_client

        self.config, self.kit_id, self.store = config, kit_id, store
        self.mode, self.out, self.moment = mode, outputs, moment
        self.prefix = f"{config.topic_prefix}/{kit_id}"
        # A persistent session: the broker keeps HQ's acks for the kit while it is away.
        built = new_client(config.url, client_id=config.client_id or f"dropkit-{kit_id}",
                           protocol=config.protocol, session_expiry_s=config.session_expiry_s,
                           keepalive_s=config.keepalive_s, username=config.username,
                           password=password, ca_file=config.ca_file,
                           cert_file=config.cert_file, key_file=config.key_file,
                           will=Will(f"{self.prefix}/status", "offline"),
                           max_packet_bytes=MAX_PACKET_BYTES,
                           packet_too_big=self._packet_too_big)
        self.client, self._connect_options = built.paho, built.connect_options
        self.host, self.port = built.address.host, built.address.port
        # The outbox window is ours (_drain); paho must never hold a message back, or one it
        # queued could go out after a later one we handed it (status and discovery messages
        # take paho's in-flight slots too).
        self.client.max_inflight_messages_set(0)
        self.client.max_queued_messages_set(0)
        self.client.on_connect = self._connected
        self.client.on_disconnect = self._disconnected
        self.client.on_publish = self._published
        self.client.on_message = self._message
        self._watch_socket_callbacks()

        self.state = "connecting"
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopping = False
        self._socket_gone = asyncio.Event()  # paho closed the socket: the connection is over
        self._serving = False  # a connected socket is watched by the loop
        self._failure: Exception | None = None  # what ended the connection, if a callback
        self._last_complaint = ""
        self._connected_at = 0.0  # monotonic
        self._ack_times = AckTimes(config.ack_window_s, ACK_SAMPLES)
        self.drain = OutboxDrain(
            store, moment, self.prefix, config.inflight_window, config.resend_after_s,
            publish=lambda topic, payload: self.client.publish(topic, payload, qos=1).mid,
            connected=lambda: self.connected,
            sale_sent=lambda order_id: self._ack_times.sent(order_id, time.monotonic()),
            relayed=outputs.relayed, refusal=self._refused,
            spawn=lambda job: outputs.spawn("uplink_drain", job))
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._hq_instances: set[str] = set()  # the HQ status topics heard online
        self._telemetry_seq = 0
        self._telemetry_wanted = asyncio.Event()  # a power change: send before the interval
        self.garbage = 0
        self.connects = 0

    # -- lifecycle -------------------------------------------------------------------------

    def parts(self) -> dict[str, Callable[[], Awaitable[object]]]:
        """The long-running tasks to supervise. ``uplink`` (the connection) is stopped last,
        after :meth:`goodbye`; the others first."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.mode.set_uplink_healthy(False)
        return {CONNECTION_PART: self._stay_connected, "uplink_drain": self.drain.run,
                "telemetry": self._publish_telemetry, "uplink_health": self._watch_health,
                "reconcile": self._sweep, "uplink_keepalive": self._keep_alive}

    async def goodbye(self, timeout: float = 3.0) -> None:
        """Say ``offline`` (retained) and disconnect, once the other parts stopped; what is
        not relayed stays in the outbox."""
        await self.drain.flush_acked()
        self._stopping = True
        if self.connected:
            info = self.client.publish(f"{self.prefix}/status", "offline", qos=1, retain=True)
            await self._published_within(info, timeout)
        if self.client.socket() is not None:
            self.client.disconnect()  # written by the loop, then paho closes the socket
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._socket_gone.wait(), timeout)

    def wake(self) -> None:
        """New rows in the outbox: publish them now rather than at the next tick."""
        self.drain.wake()

    def retry_relayed(self) -> None:
        """The store takes writes again: mark what the broker acknowledged meanwhile."""
        self.drain.retry_relayed()

    def health(self) -> dict[str, Any]:
        ack_p95 = self._ack_times.p95()
        return {"state": self.state, "broker": f"{self.host}:{self.port}",
                "inflight": len(self.drain.inflight),
                "ack_p95_s": None if ack_p95 is None else round(ack_p95, 3),
                "garbage_acks": self.garbage, "refused_by_broker": self.drain.refused}

    async def wait_for_ack(self, order_id: str, timeout: float) -> dict[str, Any] | None:
        """The order's view once HQ has settled it, or None after ``timeout`` seconds."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(order_id, []).append(future)
        self.wake()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(order_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(order_id, None)

    async def flush(self, timeout: float) -> bool:
        """Wait until every outbox message is relayed; False when ``timeout`` passes first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.wake()
        while loop.time() < deadline:
            if self.connected and self.drain.idle and \
                    await self.store.read(outbox.depth) == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    async def publish_final_telemetry(self, timeout: float = 3.0) -> None:
        """The last telemetry before power-off, QoS 1, delivered before this returns."""
        if self.connected:
            await self._published_within(await self._send_telemetry(qos=1), timeout)

    def publish_telemetry_now(self) -> None:
        """A power change: tell remote ops at once, not at the next interval (the telemetry
        part sends it, so a failure is that part's, and its next good send clears it)."""
        self._telemetry_wanted.set()

    # -- paho on the loop ---------------------------------------------------------------

    async def _stay_connected(self) -> None:
        """Connect, serve the connection until paho closes it, and again, with exponential
        backoff and jitter so a fleet of kits does not reconnect in step."""
        loop = asyncio.get_running_loop()
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s, jitter=0.5)
        while not self._stopping:
            self._socket_gone.clear()
            self._failure = None
            sessions = self.connects
            try:
                await asyncio.to_thread(self._connect)
            except ssl.SSLError as exc:
                # Not the network: a CA or certificate that does not match the broker's, or a
                # kit whose clock is not set yet.
                self._say_once(tls_failure(exc, f"{self.host}:{self.port}", self.moment().iso))
            except OSError as exc:
                log.debug("broker %s:%d unreachable: %s", self.host, self.port, exc)
            except Exception:  # a bug here must not end the reconnecting for good
                log.exception("connecting to broker %s:%d failed", self.host, self.port)
            else:
                sock = self.client.socket()
                if sock is not None:
                    loop.add_reader(sock, self._readable)
                    self._serving = True
                    await self._socket_gone.wait()
                    self._serving = False
                if self._failure is not None:
                    raise self._failure  # the supervisor logs it and connects again
                if self.connects > sessions and self._lasted():  # the next try starts afresh
                    backoff.reset()
            if self._stopping:
                break
            await asyncio.sleep(backoff.next())

    def _lasted(self) -> bool:
        return time.monotonic() - self._connected_at >= STABLE_S

    def _packet_too_big(self, size: int) -> None:
        self.garbage += 1
        self._say_once(f"broker {self.host}:{self.port} sent a packet of {size} bytes (the kit "
                       f"takes at most {MAX_PACKET_BYTES}): connection dropped")

    def _refused(self, what: str) -> None:
        """The broker refused an outbox message: said once, counted in health at once."""
        self._say_once(f"broker {self.host}:{self.port} {what}")
        self._update_health()

    def _say_once(self, complaint: str) -> None:
        """A warning for a lasting fault, once, not at every retry."""
        if complaint != self._last_complaint:
            self._last_complaint = complaint
            log.warning("%s", complaint)

    def _connect(self) -> None:
        """The blocking part, on a worker thread: TCP, TLS, and CONNECT handed to paho."""
        self.client.connect(self.host, self.port, self.config.keepalive_s,
                            **self._connect_options)

    # -- paho's callbacks (on the loop, from loop_read and loop_write) ------------------------

    def _connected(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._say_once(
                f"broker {self.host}:{self.port} refused the connection: {reason_code}")
            return
        self.connected, self.state = True, "connected"
        self._connected_at = time.monotonic()
        self.connects += 1
        self._hq_instances.clear()  # heard again on this connection (retained)
        log.info("uplink connected to %s:%d", self.host, self.port)
        # HQ's instances say online/offline under hq/ (retained; docs/mqtt.md).
        self.client.subscribe([(f"{self.prefix}/acks", 1), (f"{self.prefix}/manifest", 1),
                               (f"{self.config.topic_prefix}/hq/#", 1)])
        self.client.publish(f"{self.prefix}/status", "online", qos=1, retain=True)
        if self.config.ha_discovery:
            from agent.uplink.discovery import discovery_messages

            for topic, payload in discovery_messages(self.config.topic_prefix, self.kit_id):
                self.client.publish(topic, payload, qos=1, retain=True)
        self.publish_telemetry_now()
        self._update_health()
        self.wake()

    def _disconnected(self, client, userdata, flags, reason_code, properties) -> None:
        if self.connected and not self._stopping:
            if self._lasted():
                self._last_complaint = ""  # a new fault, not the last one again
            self._say_once(f"uplink lost the broker {self.host}:{self.port}: {reason_code}")
        self.connected, self.state = False, "disconnected"
        self._update_health()

    def _published(self, client, userdata, mid, reason_code, properties) -> None:
        # MQTT 5: a reason code of 0x80 or more is the broker's refusal to pass it on.
        self.drain.published(mid, str(reason_code) if reason_code.is_failure else "")

    async def _publish_telemetry(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._telemetry_wanted.wait(),
                                       self.config.telemetry_interval_s)
            self._telemetry_wanted.clear()
            if self.connected:
                await self._send_telemetry()

    async def _send_telemetry(self, qos: int = 0) -> Any:
        self._telemetry_seq += 1
        seq = self._telemetry_seq
        payload = {**await self.out.telemetry(), "ts": self.moment().iso, "seq": seq}
        return self.client.publish(f"{self.prefix}/telemetry/power",
                                   json.dumps(payload, separators=(",", ":")), qos=qos)

    async def _watch_health(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.config.online_ack_p95_s / 2))
            self._update_health()

    def _update_health(self) -> None:
        """Online while connected and HQ answers fast (:class:`AckTimes`)."""
        healthy = self.connected and self._ack_times.healthy(self.config.online_ack_p95_s,
                                                             time.monotonic())
        self.mode.set_uplink_healthy(healthy)
        self.out.health(self.health())

    async def _sweep(self) -> None:
        config = self.config
        while True:
            events = await self.store.write(lambda db: reconcile.sweep(
                db, self.kit_id, self.moment(), mismatch_after=config.mismatch_after_s,
                refund_after=config.refund_after_s, resend_after=config.resend_after_s))
            for event in events:
                log.warning("order %s: %s", event["order_id"], event["type"])
                self.out.publish("alert", event)
            self.wake()
            await asyncio.sleep(config.reconcile_check_s)
