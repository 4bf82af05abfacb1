"""The sweep that ends customers' reservations when their time is up (a supervised part).

It sleeps until the next hold is due (by the kit's timeline: :meth:`Orders.expire_due` counts
kit seconds), expires what is due in one write and reports each expired hold, so its stock is
back on every page at once. A new hold wakes it (:meth:`wake`); it looks again at least every
:data:`LOOK_EVERY_S` while holds are live, so a timeline that moved under it (a clock the tests
drive, a suspend) is followed. At the kit's start its first run ends the holds that ran out
while the kit was off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from agent.app.sales import Orders

log = logging.getLogger(__name__)

LOOK_EVERY_S = 5.0


class HoldSweep:
    def __init__(self, sales: Orders, expired: Callable[[list[dict[str, Any]]], None]) -> None:
        self.sales, self.expired = sales, expired
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """A hold was made or ended: work out the next expiry again."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()
            ended, due_in = await self.sales.expire_due()
            if ended:
                log.info("reservations ran out, their stock back on sale: %s",
                         ", ".join(view["reservation"]["code"] for view in ended))
                self.expired(ended)
            wait = None if due_in is None else min(due_in, LOOK_EVERY_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
