"""From the broker to the ledger in batches (:class:`Intake`): paho's network threads hand each
``orders`` message over, and one thread records what is waiting in one transaction, then
publishes the acks, and only then acknowledges the messages to the broker (paho's manual ack).

So a crash anywhere repeats work rather than losing it: a message the broker has not seen
acknowledged comes again, and the ledger answers it again.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
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

MAX_BATCH = 500
"""Messages in one transaction at most (the broker's window to HQ bounds what waits anyway)."""


@dataclass(frozen=True)
class Delivery:
    """One message from the broker, to be acknowledged on the session it came by."""

    client: mqtt.Client
    mid: int
    qos: int
    topic: str
    payload: bytes


def kit_of(topic: str) -> str:
    """``<prefix>/<kit>/orders`` names the kit."""
    parts = topic.split("/")
    return parts[-2] if len(parts) >= 3 else ""


class Intake:
    """The one thread that writes the ledger: batches in, acks out."""

    def __init__(self, ledger: Ledger, send_ack: Callable[[str, Ack], object],
                 metrics: Metrics, max_batch: int = MAX_BATCH) -> None:
        self.ledger, self.send_ack, self.metrics = ledger, send_ack, metrics
        self.max_batch = max_batch
        self.waiting: queue.SimpleQueue[Delivery] = queue.SimpleQueue()

    def deliver(self, client: mqtt.Client, msg: mqtt.MQTTMessage) -> None:
        """paho's on_message (on the session's network thread)."""
        self.waiting.put(Delivery(client, msg.mid, msg.qos, msg.topic, msg.payload))

    def take(self, timeout: float) -> list[Delivery]:
        """What is waiting, up to ``max_batch``; waits up to ``timeout`` for the first."""
        try:
            batch = [self.waiting.get(timeout=timeout)]
        except queue.Empty:
            return []
        while len(batch) < self.max_batch:
            try:
                batch.append(self.waiting.get_nowait())
            except queue.Empty:
                break
        return batch

    def handle(self, batch: list[Delivery], stop: threading.Event) -> None:
        """Record the batch, send its acks, then acknowledge it to the broker (unless HQ is
        stopping while the database is away: then the broker keeps it for the next run)."""
        links: list[Link] = []
        for delivery in batch:
            try:
                links.append(parse(kit_of(delivery.topic), json.loads(delivery.payload)))
            except (ValueError, RecursionError) as exc:
                self.metrics.count("garbage")
                log.warning("ignored garbage on %s (%s): %r", delivery.topic, exc,
                            delivery.payload[:100])
        acks = self._record(links, stop)
        if acks is None:
            return
        self.metrics.recorded(links, acks)
        for kit_id, ack in acks:
            self.send_ack(kit_id, ack)
        for delivery in batch:
            delivery.client.ack(delivery.mid, delivery.qos)

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
                return self.ledger.record_many(links)
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
