"""What HQ sends the kit, taken on the kit's loop (:class:`FromHq`, a part of the uplink's
session): acks that settle sales, allocations, and the statuses of HQ's instances, on which the
kit sends again what HQ has not answered."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from agent.config import MqttConfig
from agent.core import reconcile
from agent.core.allocation import parse_allocation
from agent.core.clock import Moment
from agent.core.manifest import ManifestError
from agent.store import Store
from agent.uplink.acktimes import AckTimes

log = logging.getLogger(__name__)

MAX_ACK_BYTES = 4096
"""An ack is a few hundred bytes; a bigger payload is dropped and counted before parsing."""


class FromHq:
    """paho's ``on_message`` for the uplink's session (:class:`agent.uplink.session.Uplink`),
    which sets the attributes below."""

    config: MqttConfig
    kit_id: str
    prefix: str
    store: Store
    out: Any  # UplinkOutputs
    client: Any
    connected: bool
    garbage: int
    _ack_times: AckTimes
    _waiters: dict[str, list[asyncio.Future[dict[str, Any]]]]
    _hq_instances: set[str]
    moment: Callable[[], Moment]
    wake: Callable[[], None]
    _update_health: Callable[[], None]

    def _message(self, client, userdata, message) -> None:
        topic, payload = message.topic, message.payload
        if topic.startswith(f"{self.config.topic_prefix}/hq/"):
            self._hq_said(topic, payload)
            return
        if topic == f"{self.prefix}/manifest" and payload:  # HQ's allocation (retained)
            self.out.spawn("allocation", self._allocation(payload))
            return
        if topic != f"{self.prefix}/acks":
            return
        try:
            if len(payload) > MAX_ACK_BYTES:
                raise ValueError(f"{len(payload)} bytes, an ack has at most {MAX_ACK_BYTES}")
            ack = reconcile.parse_ack(payload)
        except ValueError as exc:
            self.garbage += 1
            log.warning("ignored garbage on %s (%s): %r", topic, exc, payload[:100])
            return
        self.out.spawn("reconcile", self._settle(ack))

    async def _settle(self, ack: reconcile.Ack) -> None:
        view = await self.store.write(
            lambda db: reconcile.apply_ack(db, ack, self.kit_id, self.moment()))
        if self._ack_times.answered(ack.order_id, time.monotonic()) is not None:
            self._update_health()
        if view is None:
            return
        log.info("order %s %s by HQ%s trace %s", ack.order_id, view["status"],
                 f" ({ack.reason})" if ack.reason else "", ack.trace_id or "-")
        self.out.publish("order", view)
        if not ack.accepted:
            self.out.publish("alert", {"type": "order_rejected", "order_id": ack.order_id,
                                       "reason": ack.reason})
            self.wake()
        for future in self._waiters.pop(ack.order_id, []):
            if not future.done():
                future.set_result(view)

    def _hq_said(self, topic: str, payload: bytes) -> None:
        """An HQ instance's status. What HQ has not answered goes again when HQ comes online:
        the first instance heard online on this connection, or one after every instance went
        offline. Each instance's status is retained, so it comes again at every subscription:
        acting on each copied the whole backlog again per instance and per connection."""
        was_online = bool(self._hq_instances)
        if payload == b"online":
            self._hq_instances.add(topic)
        else:
            self._hq_instances.discard(topic)
        if self._hq_instances and not was_online:
            self.out.spawn("reconcile", self._hq_online())

    async def _hq_online(self) -> None:
        """HQ is (back) online: what it has not answered goes to it again now, and its
        answers are timed afresh (:meth:`AckTimes.restart`)."""
        again = await self.store.write(lambda db: reconcile.resend_unanswered(db, self.moment()))
        if again:
            log.info("HQ is online: %d unanswered sale(s) sent again", again)
        self._ack_times.restart(time.monotonic())
        self._update_health()
        self.wake()

    async def _allocation(self, payload: bytes) -> None:
        """HQ's allocation for this kit, taken by the rule of a staff load; the answer back."""
        try:
            seq, manifest = parse_allocation(payload)
        except ManifestError as exc:
            self.garbage += 1
            log.warning("ignored an allocation from HQ (%s): %r", exc, payload[:100])
            return
        answer = await self.out.allocation(seq, manifest)
        if self.connected:  # else answered when the broker sends it again at the next connect
            self.client.publish(f"{self.prefix}/manifest/answer", json.dumps(answer), qos=1)
