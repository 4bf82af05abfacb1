"""From the broker to the ledger in batches (:class:`Intake`): paho's network threads hand each
``orders`` message over, and one thread records what is waiting in one transaction, then
publishes the acks, waits until the broker has them all, and only then acknowledges the
messages to the broker (paho's manual ack), each on the connection it came by (:class:`Inbound`).
The thread sleeps until a message comes or the broker takes one of HQ's (paho's
``on_publish``, :meth:`Intake.published`), or until its caller's next tick.

So a crash anywhere repeats work rather than losing it: a message the broker has not seen
acknowledged comes again at the session's next connection, and the ledger answers it again.
Three ways it was not so: paho holds a publish back while its in-flight window (20) is full but
sends an acknowledgement at once, so the broker could have a batch's acknowledgements and not
most of its answers when HQ died; an acknowledgement for a message from an earlier connection
would have gone out on the next one, where a broker that forgot the session numbers other
messages from 1 again; and a batch whose answers took the broker over 10 s was left
unacknowledged on a live connection, where the broker never sends it again, so its messages
kept their places in the broker's window (HQ's Receive Maximum) until HQ was sent nothing more.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.backoff import Backoff
from agent.hq.ledger import Ack, Ledger
from agent.hq.links import Link, parse

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

    from agent.hq.metrics import Metrics

log = logging.getLogger("dropkit.hq")

GATHER_S = 0.01
"""When a message comes while a batch's answers are out, how long the intake waits for more (as
the broker's window frees they come in a stream) before it records the next batch: woken by
the first, it recorded a batch of a few, and one instance on PostgreSQL spent its time on
transactions of a hundred messages (60 batches for 10,000, 31 with this)."""
MAX_BATCH = 500
"""Messages in one transaction at most (the broker's window to HQ bounds what waits anyway)."""


class Inbound:
    """One paho client that takes ``orders``, its connections counted: a message is
    acknowledged to the broker only while the connection it came by lasts.

    paho numbers a closed connection's end (``on_socket_close``) before it clears what it had
    queued to send and connects again, and an acknowledgement is queued under the same lock, so
    one queued in time goes with the old connection and none goes out on the next.
    """

    def __init__(self, paho: mqtt.Client) -> None:
        self.paho = paho
        self.connection = 0
        self._lock = threading.Lock()
        paho.on_socket_close = self._closed

    def _closed(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        with self._lock:
            self.connection += 1

    def ack(self, connection: int, mid: int, qos: int) -> bool:
        """Acknowledge message ``mid`` of ``connection``; False when that connection is over."""
        with self._lock:
            if connection != self.connection:
                return False
            self.paho.ack(mid, qos)
            return True


@dataclass(frozen=True)
class Delivery:
    """One message from the broker, to be acknowledged on the connection it came by."""

    inbound: Inbound
    connection: int
    mid: int
    qos: int
    topic: str
    payload: bytes


@dataclass
class Answered:
    """A recorded batch whose answers are on their way to the broker: its messages are
    acknowledged once the broker has every answer (meanwhile the next batch is recorded)."""

    waiting: set[int]  # the answers' mids the broker has not taken yet
    batch: list[Delivery]

    def state(self) -> str:
        """``taken`` (the broker has every answer), ``waiting``, or ``gone`` (every connection
        its messages came by has ended: the broker sends them again at the session's next,
        and they are answered again). No deadline: however late the answers, a live
        connection's messages are acknowledged, for the broker never sends them again on it
        (paho sends an answer published while it was disconnected once it is connected)."""
        if not self.waiting:
            return "taken"
        if all(d.connection != d.inbound.connection for d in self.batch):
            return "gone"
        return "waiting"


def kit_of(topic: str) -> str:
    """``<prefix>/<kit>/orders`` names the kit."""
    parts = topic.split("/")
    return parts[-2] if len(parts) >= 3 else ""


class Intake:
    """The one thread that writes the ledger: batches in, acks out."""

    def __init__(self, ledger: Ledger, send_ack: Callable[[str, Ack], mqtt.MQTTMessageInfo],
                 metrics: Metrics, max_batch: int = MAX_BATCH) -> None:
        self.ledger, self.send_ack, self.metrics = ledger, send_ack, metrics
        self.max_batch = max_batch
        self.unsettled: deque[Answered] = deque()
        self.ledger_s = 0.0  # seconds spent in the ledger's transactions (the stop's log line)
        self._waiting: deque[Delivery] = deque()
        self._acked: set[int] = set()  # mids the broker took since the last settle
        self._wake = threading.Condition()  # a message came, or the broker took one

    def deliver(self, inbound: Inbound, msg: mqtt.MQTTMessage) -> None:
        """paho's on_message (on the session's network thread, which counts its
        connections)."""
        with self._wake:
            self._waiting.append(Delivery(inbound, inbound.connection, msg.mid, msg.qos,
                                          msg.topic, msg.payload))
            self._wake.notify()

    def published(self, mid: int) -> None:
        """paho's on_publish for the client that sends the acks: the broker took ``mid``."""
        with self._wake:
            self._acked.add(mid)
            self._wake.notify()

    def take(self, timeout: float) -> list[Delivery]:
        """What is waiting, up to ``max_batch``; waits up to ``timeout`` for a message, or for
        the broker to take one of HQ's (then maybe nothing: :meth:`settle` is next)."""
        with self._wake:
            self._wake.wait_for(lambda: self._waiting or self._acked, timeout)
            if self._waiting and self.unsettled:  # more come as the broker's window frees
                self._wake.wait_for(lambda: len(self._waiting) >= self.max_batch, GATHER_S)
            return [self._waiting.popleft()
                    for _ in range(min(len(self._waiting), self.max_batch))]

    def handle(self, batch: list[Delivery], stop: threading.Event) -> None:
        """Record the batch and send its acks; :meth:`settle` acknowledges it to the broker once
        the broker has them (unless HQ is stopping while the database is away: then the broker
        keeps it for the next run)."""
        links: list[Link] = []
        for delivery in batch:
            try:
                link = parse(kit_of(delivery.topic), json.loads(delivery.payload))
                link.own_faults  # noqa: B018 -- hashed here, not inside the ledger's transaction
                links.append(link)
            except (ValueError, RecursionError) as exc:
                self.metrics.count("garbage")
                log.warning("ignored garbage on %s (%s): %r", delivery.topic, exc,
                            delivery.payload[:100])
        acks = self._record(links, stop)
        if acks is None:
            return
        self.metrics.recorded(links, acks)
        # Known taken by their mids (paho's on_publish comes just before its MQTTMessageInfo
        # says published, and an answer published while disconnected is never said to be).
        answers = {self.send_ack(kit_id, ack).mid for kit_id, ack in acks}
        self.unsettled.append(Answered(answers, batch))
        self.settle()

    def settle(self) -> None:
        """Acknowledge to the broker, in order, the batches whose answers it has."""
        with self._wake:
            acked, self._acked = self._acked, set()
        for answered in self.unsettled:
            answered.waiting -= acked
        while self.unsettled and (state := self.unsettled[0].state()) != "waiting":
            answered = self.unsettled.popleft()
            if state == "gone":
                log.info("%d message(s) came by a connection that ended before the broker "
                         "had their answers: it sends them again", len(answered.batch))
                continue
            for delivery in answered.batch:
                delivery.inbound.ack(delivery.connection, delivery.mid, delivery.qos)

    def finish(self, timeout: float) -> None:
        """At a stop: settle what can be within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        self.settle()
        while self.unsettled and (left := deadline - time.monotonic()) > 0:
            with self._wake:
                self._wake.wait_for(lambda: self._acked, left)
            self.settle()

    def release_overdue(self) -> None:
        try:
            released = self.ledger.release_overdue()
        except self.ledger.db.transient as exc:
            log.warning("the ledger is not reachable (%s); held messages wait", exc)
            return
        self.metrics.recorded([], released)
        for kit_id, ack in released:
            self.send_ack(kit_id, ack)

    def _record(self, links: list[Link], stop: threading.Event) -> list[tuple[str, Ack]] | None:
        backoff = Backoff(0.5, 10.0)
        while True:
            try:
                return self._timed(links)
            except self.ledger.db.transient as exc:
                wait = backoff.next()
                log.warning("the ledger is not reachable (%s); trying again in %.1f s", exc, wait)
                if stop.wait(wait):
                    return None
            except Exception:
                if len(links) == 1:
                    log.exception("could not record kit %s %s %s; dropped", links[0].kit_id,
                                  links[0].kind, links[0].order_id)
                    self.metrics.count("garbage")
                    return []
                log.exception("a batch of %d could not be recorded; one at a time", len(links))
                acks: list[tuple[str, Any]] = []
                for link in links:
                    one = self._record([link], stop)
                    if one is None:
                        return None
                    acks += one
                return acks

    def _timed(self, links: list[Link]) -> list[tuple[str, Ack]]:
        began = time.monotonic()
        try:
            return self.ledger.record_many(links)
        finally:
            self.ledger_s += time.monotonic() - began
