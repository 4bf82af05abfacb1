"""What the web layer calls on the kit: :class:`WebCalls` is the kit's face as
:class:`agent.web.api.KitAPI`, a mixin of :class:`agent.app.kit.Kit` (which owns the parts
these calls reach)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from agent.core import kitmeta, printjobs, receipts
from agent.core.clock import Moment
from agent.core.errors import Refusal
from agent.core.views import availability, order_view
from agent.core.wording import Wording, state_word

if TYPE_CHECKING:
    from agent.app.coordinator import Coordinator
    from agent.app.events import EventHub
    from agent.app.holdsweep import HoldSweep
    from agent.app.sales import Orders
    from agent.app.storage import WriteMeter
    from agent.config import Config
    from agent.core.mode import Mode
    from agent.fieldio.service import FieldDevices
    from agent.power.service import PowerService
    from agent.store import Store
    from agent.uplink.session import Uplink
    from agent.web.api import Event, SimulatedDeviceControls, SimulatedPowerControls
    from agent.web.auth import StaffAuth, StaffRequest

log = logging.getLogger("dropkit")


class WebCalls:
    """The calls of :class:`agent.web.api.KitAPI`, over the kit's parts."""

    config: Config
    kit_id: str
    store: Store
    sales: Orders
    writes: WriteMeter
    events: EventHub
    coordinator: Coordinator
    mode: Mode
    devices: FieldDevices
    power: PowerService
    uplink: Uplink | None
    staff_auth: StaffAuth
    hold_sweep: HoldSweep
    _availability_due: bool
    moment: Callable[[], Moment]
    spawn: Callable[[str, Coroutine[Any, Any, object]], object]
    outbox_changed: Callable[[], None]
    _manifest_loaded: Callable[[], Coroutine[Any, Any, dict[str, Any]]]

    def check_staff(self, request: StaffRequest, client: str) -> None:
        self.staff_auth.check(request, client, time.monotonic(), time.time_ns() // 1_000_000)

    def check_taking_orders(self) -> None:
        if refusal := self.coordinator.state.refusal:
            raise Refusal("shutting_down", refusal, retry_after=300)

    def sale_made(self, view: dict[str, Any]) -> None:
        self.writes.sale()
        self.events.publish("order", view)
        self._stock_changed()
        self.outbox_changed()
        self.devices.wake_printer()

    def order_changed(self, view: dict[str, Any], *, relay: bool) -> None:
        self.events.publish("order", view)
        self.devices.wake_printer()  # a payment confirmed, a void or a refund has its paper
        if relay:
            self._stock_changed()
            self.outbox_changed()

    def reservation_changed(self, view: dict[str, Any]) -> None:
        self.events.publish("order", view)
        self._stock_changed()
        self.hold_sweep.wake()

    def _stock_changed(self) -> None:
        """Tell every page what is left: an ``availability`` event, the one event about sales
        anyone may see; one read of the store for all the changes made before it runs."""
        if not self._availability_due:
            self._availability_due = True
            self.spawn("events", self._publish_availability())

    async def _publish_availability(self) -> None:
        self._availability_due = False
        self.events.publish("availability", {"available": await self.store.read(availability)})

    async def confirm_online(self, view: dict[str, Any]) -> dict[str, Any]:
        """Online, wait a short while for HQ to settle a new sale; else it stays queued."""
        if self.uplink is None or self.mode.state != "online" or not self.config.mqtt.ack_wait_s:
            return view
        settled = await self.uplink.wait_for_ack(view["order_id"], self.config.mqtt.ack_wait_s)
        return settled or view

    async def receipt_record(self, kit: str, seq: int, link_hash: str) -> dict[str, Any] | None:
        """What the kit recorded for the receipt link a QR code names, worded as the paper
        words it; None when it is not this kit's link."""
        def read(db: Any) -> tuple[dict[str, Any], dict[str, Any], Any] | None:
            link = receipts.find_link(db, seq, link_hash)
            if link is None:
                return None
            order: dict[str, Any] = order_view(db, link["order_id"])  # type: ignore[assignment]
            return link, order, receipts.closing_link(db, order["order_id"],
                                                      order["receipt"]["seq"])
        found = await self.store.read(read) if kit == self.kit_id else None
        if found is None:
            return None
        link, order, closed = found
        words = Wording(self.config.receipt)
        return {"shop_name": self.config.receipt.shop_name or self.config.kit.name,
                "kit_id": self.kit_id, "seq": seq, "kind": link["kind"],
                "number": order["number"], "state": state_word(order),
                "recorded_at": words.time(link["created_at"]),
                "sold_at": words.time(order["created_at"]),
                "closed_at": words.time(closed["created_at"]) if closed else None,
                "lines": [{"qty": line["qty"], "name": line["name"],
                           "amount": words.money(line["amount_cents"])}
                          for line in order["lines"]],
                "total": words.money(order["total_cents"]),
                "payment": order["payment"]["method"]}

    async def reprint(self, order_id: str) -> int:
        return await self.devices.reprint(order_id)

    async def print_test_slip(self) -> dict[str, Any]:
        return await self.devices.print_test_slip()

    async def print_jobs_to_check(self) -> list[dict[str, Any]]:
        return await self.store.read(printjobs.jobs_to_check)

    async def mark_print_job_checked(self, job_id: int) -> bool:
        return await self.store.write(
            lambda db: printjobs.mark_checked(db, job_id, self.moment().iso))

    async def set_staff_latch(self, latched: bool) -> dict[str, Any]:
        await self.store.write(lambda db: kitmeta.write_latch(db, latched))
        self.mode.set_latch(latched)
        log.info("staff latch %s: mode %s", "set" if latched else "released", self.mode.state)
        return {"mode": self.mode.state, "reasons": self.mode.reasons}

    async def load_manifest(self, manifest: Any) -> dict[str, Any]:
        changed = await self.sales.load_manifest(manifest, "staff")
        return {"changed": changed, **await self._manifest_changed()}

    async def take_allocation(self, seq: int, manifest: Any) -> dict[str, Any]:
        """HQ's allocation (the uplink's call), by the rule of a staff load; the answer for HQ
        (:func:`agent.core.allocation.take_allocation`)."""
        answer = await self.sales.take_allocation(seq, manifest)
        # The broker sends the retained allocation again at every connection: said once.
        again = answer.pop("again")
        if answer.pop("changed"):
            log.info("manifest %s from HQ's allocation #%d", manifest.version, seq)
            await self._manifest_changed()
        elif answer["result"] == "refused" and not again:
            log.warning("HQ's allocation #%d refused: below what is sold or held: %s", seq,
                        ", ".join(f"{sku} ({n['taken']}, allocated {n['qty']})"
                                  for sku, n in sorted(answer["conflict"].items())))
        return answer

    async def _manifest_changed(self) -> dict[str, Any]:
        view = await self._manifest_loaded()
        self.events.publish("manifest", {"version": view["version"], "hash": view["hash"]})
        view.pop("conflict")
        self._stock_changed()
        return view

    def listen(self) -> AbstractContextManager[asyncio.Queue[Event | None]]:
        return self.events.listen()

    @property
    def simulated_power(self) -> SimulatedPowerControls | None:
        return self.power.sim

    @property
    def simulated_devices(self) -> SimulatedDeviceControls | None:
        return self.devices.sim
