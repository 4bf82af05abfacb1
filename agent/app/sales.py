"""The order book of one kit: the sales rules of :mod:`agent.core` run in the store's
transactions, with the clock (the kit's :class:`~agent.core.clock.Timeline`) and the kit's
limits filled in. Each change queues the paper it calls for (:func:`agent.core.printjobs.
queue_due`) in its own transaction, so a confirmed change always has its paper coming."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

from agent.core import holds, outbox, printjobs
from agent.core.allocation import take_allocation
from agent.core.clock import Moment
from agent.core.errors import Refusal
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
from agent.core.views import manifest_view, recent_orders
from agent.store import Store


class Orders:
    """The order book of one kit: the async face of the rules above, over the store."""

    def __init__(self, store: Store, kit_id: str, moment: Callable[[], Moment],
                 max_lines: int = 20, max_qty: int = 99, print_receipts: bool = False,
                 unpaid_slip: bool = False, hold_minutes: float = 10.0,
                 currency: str = "EUR") -> None:
        self.store, self.kit_id, self.moment = store, kit_id, moment
        self.max_lines, self.max_qty = max_lines, max_qty
        self.print_receipts, self.unpaid_slip = print_receipts, unpaid_slip
        self.hold_minutes, self.currency = hold_minutes, currency

    def _now(self) -> str:
        return self.moment().iso

    def _with_paper(self, view: dict[str, Any], db: sqlite3.Connection) -> dict[str, Any]:
        """``view``, once the paper its order now calls for is queued (with printing on)."""
        if self.print_receipts:
            printjobs.queue_due(db, view["order_id"], self._now(), unpaid_slip=self.unpaid_slip)
        return view

    def parse(self, data: object) -> OrderRequest:
        return parse_order_request(data, self.max_lines, self.max_qty)

    def place(self, request: OrderRequest,
              trace_id: str) -> Awaitable[tuple[dict[str, Any], bool]]:
        """Staff's sale, queued for the writer now (behind the requests that came before)."""
        def sale(db: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            view, created = place_order(db, request, self.kit_id, trace_id, self.moment())
            return (self._with_paper(view, db) if created else view), created
        return self.store.submit(sale)

    def reserve(self, request: OrderRequest, client: str, arrival: int,
                trace_id: str) -> Awaitable[tuple[dict[str, Any], bool]]:
        """A customer's reservation (:func:`agent.core.holds.place_hold`), queued for the
        writer now: decided in the order the requests were queued."""
        customer = holds.Customer(request.device, client)
        return self.store.submit(
            lambda db: holds.place_hold(db, request, customer, arrival, trace_id,
                                        self.moment(), self.hold_minutes * 60))

    async def get(self, order_id: str) -> dict[str, Any] | None:
        """The order as anyone who knows its id may see it: a sale, or a reservation."""
        ks = self.moment().ks
        return await self.store.read(lambda db: holds.customer_view(db, order_id, ks))

    async def find_reservation(self, code: str) -> dict[str, Any] | None:
        """The reservation with this pickup code (typed or scanned), or None."""
        ks = self.moment().ks

        def find(db: Any) -> dict[str, Any] | None:
            order_id = holds.find_code(db, code)
            return None if order_id is None else holds.customer_view(db, order_id, ks)
        return await self.store.read(find)

    async def reservations(self, limit: int = 100) -> list[dict[str, Any]]:
        ks = self.moment().ks
        return await self.store.read(lambda db: holds.live_holds(db, ks, limit))

    async def expire_due(self) -> tuple[list[dict[str, Any]], float | None]:
        """End the holds whose time is up: their views, and the seconds until the next one
        is due (None with none live). Writes only when one is due."""
        now = self.moment()
        due = await self.store.read(holds.next_expiry)
        if due is not None and due <= now.ks:
            def expire(db: Any) -> tuple[list[dict[str, Any]], float | None]:
                ids = holds.expire_due(db, now)
                return ([view for view in (holds.customer_view(db, i, now.ks) for i in ids)
                         if view is not None], holds.next_expiry(db))
            expired, due = await self.store.write(expire)
        else:
            expired = []
        return expired, None if due is None else max(0.0, due - now.ks)

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        return await self.store.read(lambda db: recent_orders(db, limit))

    async def void(self, order_id: str, reason: str) -> dict[str, Any]:
        """Void a sale whose payment did not go through, or let a reservation go."""
        def void(db: sqlite3.Connection) -> dict[str, Any]:
            if holds.is_hold(db, order_id):
                return holds.cancel_hold(db, order_id, self.moment())
            return self._with_paper(void_order(db, order_id, reason, self.kit_id, self._now()),
                                    db)
        return await self.store.write(void)

    async def refund(self, order_id: str, restock: bool, reason: str) -> dict[str, Any]:
        return await self.store.write(lambda db: self._with_paper(
            refund_order(db, order_id, restock, reason, self.kit_id, self._now()), db))

    async def settle_payment(self, order_id: str, paid: bool,
                             method: str | None = None) -> tuple[dict[str, Any], bool]:
        """Staff's word on a payment: a pending card sale's, or a reservation's (``method``:
        how it was paid). Returns the order and whether a reservation became a sale."""
        def settle(db: sqlite3.Connection) -> tuple[dict[str, Any], bool]:
            if not holds.is_hold(db, order_id):
                return self._with_paper(settle_payment(db, order_id, paid, self._now()),
                                        db), False
            if not paid:
                raise Refusal("reservation_unpaid", f"order {order_id} is a reservation: "
                              "nothing was paid, so nothing failed; take the payment again "
                              "or void it to let its items go", order_id=order_id)
            if method is None:
                raise Refusal("invalid", "a reservation is paid in cash or by card: send "
                              "{\"result\": \"paid\", \"method\": \"cash\" or \"card\"}")
            sale = holds.settle_hold(db, order_id, method, self.kit_id, self.moment())
            self._with_paper(sale, db)
            return sale, True
        return await self.store.write(settle)

    async def manifest(self) -> dict[str, Any]:
        """The items on sale (``opens_in_s`` by the kit's clock), the prices' ``currency`` and
        ``hold_minutes``."""
        now = self.moment().iso
        view = await self.store.read(lambda db: manifest_view(db, now))
        return {**view, "currency": self.currency, "hold_minutes": self.hold_minutes}

    async def load_manifest(self, manifest: Manifest, source: str) -> bool:
        return await self.store.write(lambda db: apply_manifest(db, manifest, source, self._now()))

    async def take_allocation(self, seq: int, manifest: Manifest) -> dict[str, Any]:
        """HQ's allocation number ``seq``, by the rule of a staff load; the answer for HQ."""
        return await self.store.write(lambda db: take_allocation(db, seq, manifest, self._now()))

    async def take_up_file(self, manifest: Manifest, path: str) -> ManifestConflict | None:
        """The configured file at a start: applied when it changed (see :func:`apply_file`)."""
        return await self.store.write(lambda db: apply_file(db, manifest, path, self._now()))

    async def file_conflict(self) -> dict[str, Any] | None:
        return await self.store.read(file_conflict)

    async def queue_depth(self) -> int:
        return await self.store.read(outbox.depth)
