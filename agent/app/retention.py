"""The retention part (supervised as ``retention``): every so often the store forgets the
outbox messages and print jobs :mod:`agent.core.retention` says may go, once older than
``[kit] retention_days``, a batch per transaction so orders never wait long behind it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.core import retention
from agent.core.clock import iso_of

if TYPE_CHECKING:
    from agent.store import Store

log = logging.getLogger(__name__)

EVERY_S = 3600.0
"""How often the store is pruned (more often when the retention itself is shorter)."""


class Retention:
    """Prunes ``store`` of what is older than ``days`` by ``wall`` (seconds since the epoch)."""

    def __init__(self, store: Store, days: float, wall: Callable[[], float]) -> None:
        self.store, self.wall = store, wall
        self.keep_s = days * 86400
        self.every_s = min(EVERY_S, max(1.0, self.keep_s / 4))

    async def run(self) -> None:
        """The part: prune now, then every :attr:`every_s` seconds, until cancelled."""
        while True:
            await self.prune()
            await asyncio.sleep(self.every_s)

    async def prune(self) -> dict[str, int]:
        """One round: how many messages and print jobs went."""
        before = iso_of(self.wall() - self.keep_s)
        pruned = {"messages": await self._prune(retention.MESSAGES, before),
                  "print_jobs": await self._prune(retention.JOBS, before)}
        if any(pruned.values()):
            log.info("retention: pruned %d relayed and settled messages and %d finished print "
                     "jobs from before %s", pruned["messages"], pruned["print_jobs"], before)
        return pruned

    async def _prune(self, rows: retention.Forgettable, before: str) -> int:
        total = 0
        while ids := await self.store.read(lambda db: retention.prunable(db, rows, before)):
            gone = await self.store.write(
                lambda db, ids=ids: retention.prune(db, rows, ids, before))
            total += gone
            if gone == 0:  # what was picked changed meanwhile: the next round looks again
                break
        return total
