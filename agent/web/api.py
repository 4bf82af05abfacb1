"""What the web layer needs of the kit: a narrow interface, so HTTP never reaches into the daemon.

:class:`agent.app.kit.Kit` provides it. The web layer chooses status codes and shapes
requests; everything it changes goes through these calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agent.web.auth import StaffRequest

Event = tuple[str, dict[str, Any]]
"""A live event for the staff pages: its kind and its data."""


class Sales(Protocol):
    """The order book (:class:`agent.app.sales.Orders`)."""

    def parse(self, data: object) -> Any: ...

    def place(self, request: Any, trace_id: str) -> Awaitable[tuple[dict[str, Any], bool]]:
        """Staff's sale, queued for the store's writer at the call."""

    def reserve(self, request: Any, client: str, arrival: int,
                trace_id: str) -> Awaitable[tuple[dict[str, Any], bool]]:
        """A customer's reservation, queued for the store's writer at the call."""

    async def get(self, order_id: str) -> dict[str, Any] | None: ...

    async def find_reservation(self, code: str) -> dict[str, Any] | None: ...

    async def reservations(self, limit: int = 100) -> list[dict[str, Any]]: ...

    async def recent(self, limit: int = 50) -> list[dict[str, Any]]: ...

    async def void(self, order_id: str, reason: str) -> dict[str, Any]: ...

    async def refund(self, order_id: str, restock: bool, reason: str) -> dict[str, Any]: ...

    async def settle_payment(self, order_id: str, paid: bool,
                             method: str | None = None) -> tuple[dict[str, Any], bool]: ...

    async def manifest(self) -> dict[str, Any]: ...


class SimulatedPowerControls(Protocol):
    """The power rig of ``dropkit sim`` (:class:`simulators` power rig), as the page drives it."""

    speed: float

    def pull_mains(self) -> None: ...

    def restore_mains(self) -> None: ...

    def unplug(self, sensor: Any) -> None: ...

    def plug(self, sensor: Any) -> None: ...

    def set_load(self, amps: float) -> None: ...

    def set_mains_volts(self, volts: float) -> None: ...

    def run_scenario(self, name: str) -> Any: ...

    def snapshot(self) -> dict[str, Any]: ...


class SimulatedDeviceControls(Protocol):
    """The simulated printer, scanner and buttons of ``dropkit sim``."""

    def scan(self, text: str) -> None: ...

    def press(self, button: str) -> None: ...

    def long_press(self, button: str) -> Coroutine[Any, Any, None]: ...

    def set_paper(self, level: Any) -> None: ...

    def set_printer_silent(self, silent: bool) -> None: ...

    def set_cover_open(self, cover_open: bool) -> None: ...

    def state(self) -> dict[str, Any]: ...


class KitAPI(Protocol):
    sales: Sales
    max_body_bytes: int
    kit_id: str

    def check_staff(self, request: StaffRequest, client: str) -> None:
        """Return for a staff credential ``client`` may use; raise the refusal that says what
        is wrong (:class:`agent.web.auth.StaffAuth`)."""

    def check_taking_orders(self) -> None:
        """Raise the ``shutting_down`` refusal once the shutdown has begun."""

    async def health(self) -> dict[str, Any]: ...

    def sale_made(self, view: dict[str, Any]) -> None:
        """A new sale is durable: tell the staff pages, the uplink and the printer."""

    def order_changed(self, view: dict[str, Any], *, relay: bool) -> None:
        """A sale was voided or refunded (``relay``: a receipt link for HQ) or its card
        payment settled."""

    def reservation_changed(self, view: dict[str, Any]) -> None:
        """A customer's reservation was made or let go: its stock moved."""

    async def confirm_online(self, view: dict[str, Any]) -> dict[str, Any]: ...

    async def receipt_record(self, kit: str, seq: int, link_hash: str
                             ) -> dict[str, Any] | None:
        """What the kit recorded for the receipt link ``/r/{kit}/{seq}/{hash}`` names (its
        order's number, state, times, lines and total, worded); None when it has no such link."""

    async def reprint(self, order_id: str) -> int: ...

    async def print_test_slip(self) -> dict[str, Any]:
        """Print a slip that sells nothing, now: ``result`` (``printed``, ``refused``,
        ``unsure``), ``note`` and the ``printer``'s status."""

    async def print_jobs_to_check(self) -> list[dict[str, Any]]: ...

    async def mark_print_job_checked(self, job_id: int) -> bool: ...

    async def set_staff_latch(self, latched: bool) -> dict[str, Any]: ...

    async def load_manifest(self, manifest: Any) -> dict[str, Any]: ...

    def listen(self) -> AbstractContextManager[asyncio.Queue[Event | None]]: ...

    def spawn(self, name: str, job: Any) -> object:
        """Run a short job the kit tracks (a long button press of the simulator)."""

    @property
    def simulated_power(self) -> SimulatedPowerControls | None: ...

    @property
    def simulated_devices(self) -> SimulatedDeviceControls | None: ...
