"""The order book of one kit: the sales rules of :mod:`agent.core` run in the store's
transactions, with the clock (the kit's :class:`~agent.core.clock.Timeline`) and the kit's
limits filled in. Each change queues the paper it calls for (:func:`agent.core.printjobs.
queue_due`) in its own transaction, so a confirmed change always has its paper coming."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from agent.core import outbox, printjobs
from agent.core.clock import Moment
from agent.core.manifest import (
    Manifest,
    ManifestConflict,
    apply_file,
    apply_manifest,
    file_conflict,
)
from agent.core.orders import (
    OrderRequest,
    parse_order_request,
    place_order,
    refund_order,
    settle_payment,
    void_order,
)
from agent.core.views import manifest_view, order_view, recent_orders
from agent.store import Store


class Orders:
    """The order book of one kit: the async face of the rules above, over the store."""

    def __init__(self, store: Store, kit_id: str, moment: Callable[[], Moment],
                 max_lines: int = 20, max_qty: int = 99, print_receipts: bool = False,
                 unpaid_slip: bool = False) -> None:
        self.store, self.kit_id, self.moment = store, kit_id, moment
        self.max_lines, self.max_qty = max_lines, max_qty
        self.print_receipts, self.unpaid_slip = print_receipts, unpaid_slip

    def _now(self) -> str:
        return self.moment().iso

    def _with_paper(self, view: dict[str, Any], db: sqlite3.Connection) -> dict[str, Any]:
        """``view``, once the paper its order now calls for is queued (with printing on)."""
        if self.print_receipts:
            printjobs.queue_due(db, view["order_id"], self._now(), unpaid_slip=self.unpaid_slip)
        return view

    def parse(self, data: object) -> OrderRequest:
        return parse_order_request(data, self.max_lines, self.max_qty)

    async def place(self, request: OrderRequest, trace_id: str) -> tuple[dict[str, Any], bool]:
        def sale(db: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            view, created = place_order(db, request, self.kit_id, trace_id, self.moment())
            return (self._with_paper(view, db) if created else view), created
        return await self.store.write(sale)

    async def get(self, order_id: str) -> dict[str, Any] | None:
        return await self.store.read(lambda db: order_view(db, order_id))

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self.store.read(lambda db: recent_orders(db, limit))

    async def void(self, order_id: str, reason: str) -> dict[str, Any]:
        return await self.store.write(lambda db: self._with_paper(
            void_order(db, order_id, reason, self.kit_id, self._now()), db))

    async def refund(self, order_id: str, restock: bool, reason: str) -> dict[str, Any]:
        return await self.store.write(lambda db: self._with_paper(
            refund_order(db, order_id, restock, reason, self.kit_id, self._now()), db))

    async def settle_payment(self, order_id: str, paid: bool) -> dict[str, Any]:
        return await self.store.write(lambda db: self._with_paper(
            settle_payment(db, order_id, paid, self._now()), db))

    async def manifest(self) -> dict[str, Any]:
        return await self.store.read(manifest_view)

    async def load_manifest(self, manifest: Manifest, source: str) -> bool:
        return await self.store.write(lambda db: apply_manifest(db, manifest, source, self._now()))

    async def take_up_file(self, manifest: Manifest, path: str) -> ManifestConflict | None:
        """The configured file at a start: applied when it changed (see :func:`apply_file`)."""
        return await self.store.write(lambda db: apply_file(db, manifest, path, self._now()))

    async def file_conflict(self) -> dict[str, Any] | None:
        return await self.store.read(file_conflict)

    async def queue_depth(self) -> int:
        return await self.store.read(outbox.depth)
