"""The order book of one kit: the sales rules of :mod:`agent.core` run in the store's
transactions, with the clock (the kit's :class:`~agent.core.clock.Timeline`) and the kit's
limits filled in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agent.core import outbox
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
                 max_lines: int = 20, max_qty: int = 99, print_receipts: bool = False) -> None:
        self.store, self.kit_id, self.moment = store, kit_id, moment
        self.max_lines, self.max_qty = max_lines, max_qty
        self.print_receipts = print_receipts

    def _now(self) -> str:
        return self.moment().iso

    def parse(self, data: object) -> OrderRequest:
        return parse_order_request(data, self.max_lines, self.max_qty)

    async def place(self, request: OrderRequest, trace_id: str) -> tuple[dict[str, Any], bool]:
        return await self.store.write(
            lambda db: place_order(db, request, self.kit_id, trace_id, self.moment(),
                                   self.print_receipts))

    async def get(self, order_id: str) -> dict[str, Any] | None:
        return await self.store.read(lambda db: order_view(db, order_id))

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self.store.read(lambda db: recent_orders(db, limit))

    async def void(self, order_id: str, reason: str) -> dict[str, Any]:
        return await self.store.write(
            lambda db: void_order(db, order_id, reason, self.kit_id, self._now()))

    async def refund(self, order_id: str, restock: bool, reason: str) -> dict[str, Any]:
        return await self.store.write(
            lambda db: refund_order(db, order_id, restock, reason, self.kit_id, self._now()))

    async def settle_payment(self, order_id: str, paid: bool) -> dict[str, Any]:
        return await self.store.write(lambda db: settle_payment(db, order_id, paid, self._now()))

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
