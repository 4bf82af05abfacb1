"""The outbox drain: the kit's durable messages go to the broker in id order, QoS 1, at most
``inflight_window`` of them unacknowledged, and each is marked relayed only after its PUBACK.

A PUBACK that refuses the message (MQTT 5, a reason code of 0x80 or more: the broker's ACL, a
quota) leaves it in the outbox. The drain hands it again after ``resend_after_s``, then twice
that, up to :data:`REFUSED_RETRY_MOST` times that, until the broker takes it: each refusal is
counted (:attr:`OutboxDrain.refused`), and said once by the session. The retry starts from the
lowest refused id once the window is empty, so the order of the outbox is kept and no message
is in paho's hands twice.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

from agent.backoff import Backoff
from agent.core import outbox
from agent.core.clock import Moment
from agent.store import Store

READ_AHEAD = 256  # outbox rows fetched per store read during a drain
REFUSED_RETRY_MOST = 8
"""The longest wait before a refused message goes again, in ``resend_after_s``."""


class OutboxDrain:
    """Hands the outbox to ``publish(topic, payload) -> mid`` while ``connected()``;
    ``published(mid, refused)`` is paho's PUBACK for each. ``sale_sent(order_id)`` times a sale
    until HQ answers; ``relayed()`` says messages left the outbox; ``refusal(text)`` is a
    broker's refusal in words; ``spawn(job)`` runs a short job of the drain's part."""

    def __init__(self, store: Store, moment: Callable[[], Moment], prefix: str, window: int,
                 resend_after_s: float, *, publish: Callable[[str, str], int],
                 connected: Callable[[], bool], sale_sent: Callable[[str], object],
                 relayed: Callable[[], object], refusal: Callable[[str], object],
                 spawn: Callable[[Coroutine[Any, Any, object]], object]) -> None:
        self.store, self.moment, self.prefix, self.window = store, moment, prefix, window
        self._publish, self._connected, self._sale_sent = publish, connected, sale_sent
        self._relayed, self._refusal, self._spawn = relayed, refusal, spawn
        self.wake_event = asyncio.Event()
        self.inflight: dict[int, int] = {}  # paho mid -> outbox id
        # Rows read ahead of the window, so a PUBACK frees a slot without a store round trip.
        self._ready: deque[sqlite3.Row] = deque()
        self._read_upto = 0  # highest outbox id read by this process (handed or in _ready)
        self._handed_upto = 0  # highest outbox id handed to paho
        self._acked: list[int] = []
        self._flushing = False
        self.refused = 0  # PUBACKs that refused an outbox message (MQTT 5)
        self._refused_from: int | None = None  # the lowest refused id not handed again yet
        self._retry_due = False
        self._retried_upto = 0  # a PUBACK accepting up to here ends the refusals' backoff
        self._retry_wait = Backoff(resend_after_s, resend_after_s * REFUSED_RETRY_MOST)

    @property
    def idle(self) -> bool:
        """Nothing in flight and nothing acknowledged waits to be marked relayed."""
        return not self.inflight and not self._acked

    def wake(self) -> None:
        """New rows in the outbox, or room in the window: look now."""
        self.wake_event.set()

    async def run(self) -> None:
        """The ``uplink_drain`` part: publish the outbox, then wait to be woken."""
        # A restarted drain reads on from the last row handed to paho (paho re-sends what it
        # holds): rows read ahead but not handed are read again, none is handed twice.
        self._ready.clear()
        self._read_upto = self._handed_upto
        self.wake()
        while True:
            await self.wake_event.wait()
            self.wake_event.clear()
            if self._retry_due:
                if not self.idle or self._flushing:
                    continue  # the window empties first; its PUBACKs and the flush wake us
                self._hand_refused_again()
            while self._connected() and len(self.inflight) < self.window:
                if not self._ready:
                    rows = await self.store.read(
                        lambda db, a=self._read_upto: outbox.pending(db, a, READ_AHEAD))
                    if not rows:
                        break
                    self._ready.extend(rows)
                    self._read_upto = rows[-1]["id"]
                    continue  # connected may have changed while the store read
                row = self._ready.popleft()
                topic = f"{self.prefix}/{outbox.TOPIC_OF_KIND[row['kind']]}"
                mid = self._publish(topic, outbox.with_message_id(row["payload"], row["id"]))
                # paho keeps a handed message and re-sends it after a reconnect itself, so
                # it is never handed twice by one process.
                self.inflight[mid] = row["id"]
                self._handed_upto = row["id"]
                if row["kind"] == "sale":
                    self._sale_sent(row["key"])

    def published(self, mid: int, refused: str = "") -> None:
        """paho's PUBACK for ``mid`` (telemetry, status and discovery are none of the drain's),
        ``refused`` the broker's reason when it refused the message."""
        outbox_id = self.inflight.pop(mid, None)
        if outbox_id is None:
            return
        if refused:
            self._refused(outbox_id, refused)
        else:
            if outbox_id <= self._retried_upto:
                self._retry_wait.reset()  # the broker takes what it refused
            self._acked.append(outbox_id)
            self.retry_relayed()
        self.wake()

    def _refused(self, outbox_id: int, reason: str) -> None:
        """Not relayed: it stays in the outbox and goes again after the backoff."""
        self.refused += 1
        self._refusal(f"refused a message ({reason}); it stays in the outbox and goes again")
        if self._refused_from is None:
            asyncio.get_running_loop().call_later(self._retry_wait.next(), self._retry)
        self._refused_from = min(outbox_id, self._refused_from or outbox_id)

    def _retry(self) -> None:
        self._retry_due = True
        self.wake()

    def _hand_refused_again(self) -> None:
        """Read on from the lowest refused row; the window is empty, so none is in paho's
        hands, and every row the broker took was marked relayed (the read skips it)."""
        assert self._refused_from is not None
        self._retried_upto = self._handed_upto
        self._ready.clear()
        self._read_upto = self._handed_upto = self._refused_from - 1
        self._refused_from, self._retry_due = None, False

    async def flush_acked(self) -> None:
        """Mark every PUBACKed message relayed, many in one commit. When the store does not
        take the write (no room, or any other failure, which the job's part shows), the ids
        wait for :meth:`retry_relayed`: the next PUBACK, the store taking writes again, the
        goodbye."""
        try:
            while self._acked:
                ids, self._acked = self._acked, []
                try:
                    await self.store.write(
                        lambda db, ids=ids: outbox.mark_relayed(db, ids, self.moment()))
                except BaseException:  # not written: the broker has them all the same
                    self._acked = ids + self._acked
                    raise
                self._relayed()
        finally:
            self._flushing = False
            self.wake()

    def retry_relayed(self) -> None:
        """Mark what the broker acknowledged, unless a flush is under way (the kit calls it too
        when the store takes writes again)."""
        if self._acked and not self._flushing:
            self._flushing = True
            self._spawn(self.flush_acked())
