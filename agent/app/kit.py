"""The composition root: one :class:`Kit` builds the parts, wires each to what it needs, and
runs their long tasks under the :class:`~agent.app.supervisor.Supervisor`.

Each service gets narrow outputs (callables), never the kit: the power service a
:class:`~agent.power.service.PowerOutputs` and the shutdown steps, the devices a
:class:`~agent.fieldio.service.DeviceOutputs`, the uplink an
:class:`~agent.uplink.session.UplinkOutputs`; the web layer sees the kit as its
:class:`~agent.web.api.KitAPI`. Their state goes to the :class:`~agent.app.coordinator.Coordinator`,
and everything that shows state (health, telemetry, the LEDs, the staff pages) reads it there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.app.coordinator import STORAGE_ALERTS, Coordinator, KitState
from agent.app.events import EventHub
from agent.app.holdsweep import HoldSweep
from agent.app.retention import Retention
from agent.app.sales import Orders
from agent.app.storage import StorageWatch, WriteMeter
from agent.app.supervisor import Supervisor
from agent.app.webcalls import WebCalls
from agent.config import Config
from agent.config.receipt import kit_url
from agent.core import clock, kitmeta, outbox
from agent.core.clock import Clock, Moment, Timeline
from agent.core.errors import Refusal
from agent.core.manifest import ManifestError, conflict_words, read_manifest
from agent.core.mode import Mode
from agent.fieldio.service import DeviceOutputs, FieldDevices
from agent.power import killpower
from agent.power.service import RIG_FILE_NAME, PowerOutputs, PowerService
from agent.power.shutdown import ShutdownSteps
from agent.store import Store, StoreRefused
from agent.web.auth import StaffAuth, staff_token

if TYPE_CHECKING:
    from agent.power.nut import NutServer
    from agent.power.status import PowerStatus
    from agent.uplink.session import Uplink

log = logging.getLogger("dropkit")

STOP_TIMEOUT_S = 5.0
"""How long the stop waits for a part before it closes the store without it."""
UNWRITTEN_EVENTS = 100
"""Events for remote ops kept in memory while the store takes no writes (the oldest go)."""
STORE_CODES = {"storage_full", "store_damaged", "store_lost"}
"""The refusals of a store that takes no writes (:func:`agent.store.conditions.refusal`)."""
SHUTDOWN_REFUSAL = "the kit is shutting down (battery critical); no new orders"
RESUMED_REFUSAL = ("the kit was shutting down for its battery when it stopped; no new orders "
                   "until the battery recovers or mains is back")


class StartError(RuntimeError):
    """The kit cannot start; the message is the one line the operator needs."""


@dataclass(frozen=True)
class Wiring:
    """What differs between ``run`` and ``sim``."""

    simulated: bool
    state_dir: Path
    host: str
    port: int
    manifest: str
    on_ready: Callable[[str, Kit], None] | None = None
    clock: Clock | None = None
    """The kit's clocks (the system's when None); tests inject theirs here."""


class Kit(WebCalls):
    """The kit's parts, built before the loop serves; :meth:`start`, then :meth:`stop`."""

    def __init__(self, config: Config, wiring: Wiring) -> None:
        self.config, self.wiring = config, wiring
        self.kit_id = config.kit_id
        self.max_body_bytes = config.http.max_body_bytes
        self.started = time.monotonic()
        self.storage = StorageWatch(None, wiring.state_dir, config.kit.storage_warn_mb,
                                    show=self._storage_shown,
                                    recovered=self._storage_recovered)
        self.store = Store(wiring.state_dir / "dropkit.db", kit_id=self.kit_id,
                           on_condition=self.storage.store_changed)
        self.storage.store = self.store
        self.writes = WriteMeter()
        self._unwritten: deque[tuple[dict[str, Any], str]] = deque(maxlen=UNWRITTEN_EVENTS)
        self.clock = wiring.clock or Clock()
        self.timeline: Timeline | None = None  # kit seconds, once the store is open
        self.sales = Orders(self.store, self.kit_id, self.moment, config.orders.max_lines,
                            config.orders.max_qty, print_receipts=config.printer.enabled,
                            unpaid_slip=config.receipt.unpaid_slip,
                            hold_minutes=config.orders.hold_minutes,
                            currency=config.receipt.currency)
        self.hold_sweep = HoldSweep(self.sales, self._holds_expired)
        self.events = EventHub()
        self.coordinator = Coordinator(self.kit_id, self._outbox_waiting)
        self.coordinator.listen(self._state_changed)
        self.supervisor = Supervisor(self.coordinator.set_part)
        self.mode = Mode()
        self.mode.on_change(self._mode_changed)
        self.uplink: Uplink | None = None
        self.devices = FieldDevices(config, self.store, DeviceOutputs(
            publish=self.events.publish, record=self.record_event,
            printer=lambda status: self.coordinator.update(printer=status),
            scanners=lambda names: self.coordinator.update(scanners=names),
            panel=lambda health: self.coordinator.update(panel=health),
            spawn=self.spawn, set_latch=self.set_staff_latch,
            latched=lambda: self.mode.latched, request_shutdown=self.request_shutdown,
            kit_url=lambda: self.kit_url),
            simulated=wiring.simulated, state_dir=wiring.state_dir, kit_id=self.kit_id)
        self.power = PowerService(config.power, PowerOutputs(
            status=lambda health: self.coordinator.update(power=health),
            publish=self.events.publish, record=self.record_event,
            cleared=lambda: self.spawn("power", self._shutdown_cleared())),
            ShutdownSteps(stop_taking_orders=self._stop_taking_orders,
                          flush_outbox=self._flush_outbox, publish_final=self._publish_final,
                          close_store=self._close_store,
                          mark_power_down=self._mark_power_down),
            simulated=wiring.simulated, rig_file=wiring.state_dir / RIG_FILE_NAME)
        self.nut: NutServer | None = None
        if config.nut.enabled:
            from agent.power.nut import NutServer

            self.nut = NutServer(
                config.nut, lambda: self.coordinator.state.power,
                description=config.kit.name, version_line=(
                    f"dropkit {__version__}: a read-only server of the NUT network protocol"),
                fixed={"device.mfr": "dropkit", "device.model": "drop kit",
                       "device.serial": self.kit_id, "device.type": "ups",
                       "ups.mfr": "dropkit", "ups.model": "drop kit",
                       "driver.name": "dropkit", "driver.version": __version__})
        self.exit_requested: Callable[[], None] = lambda: None
        self.kit_url = kit_url(wiring.host, wiring.port) if wiring.port else None
        """Where phones reach the kit's pages (receipts link there); None until it is known
        (a server on port 0 is bound)."""
        self._stopped = False
        self._availability_due = False

    # -- start and stop -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store, restore the staff latch, load the manifest, start the parts."""
        manifest = None
        if self.wiring.manifest:
            try:
                manifest = read_manifest(self.wiring.manifest)
            except ManifestError as exc:
                raise StartError(f"manifest: {exc}") from None
        self.staff_token = staff_token(self.config, self.wiring.state_dir)
        self.staff_auth = StaffAuth(self.staff_token, self.config.http.staff_failures_per_minute)
        try:
            self.store.open()
        except StoreRefused as exc:
            raise StartError(
                f"store {self.store.path}: {exc}; the kit will not start on it ("
                + (exc.fix or "to start over as a new kit, the old files kept aside: dropkit "
                   f"store reset --i-know --state-dir {self.wiring.state_dir}") + ")") from None
        except Exception as exc:
            raise StartError(f"store {self.store.path}: {exc}") from None
        try:
            self.timeline = await self.store.write(lambda db: clock.resume(db, self.clock))
        except Refusal as refused:
            if refused.code not in STORE_CODES:
                raise
            log.error("the kit's clock could not be saved: %s", refused.detail)
            self.timeline = await self.store.read(
                lambda db: clock.resume(db, self.clock, keep=False))
        self.mode.set_latch(await self.store.read(kitmeta.read_latch))
        if (last_halt := killpower.clear_flag(self.wiring.state_dir)) is not None:
            log.warning("the kit is back on after a halt for power (%s)", last_halt)
        intent = await self.store.read(kitmeta.read_shutdown_intent)
        if intent is not None:  # before anything serves: not one order on a critical battery
            log.warning("the kit was shutting down (%s, %s) when it stopped: no orders until "
                        "power is safe again", intent.get("reason"), intent.get("at"))
            self.coordinator.update(refusal=RESUMED_REFUSAL)
        if manifest is not None:
            before = await self.sales.manifest()
            try:
                refused = await self.sales.take_up_file(manifest, self.wiring.manifest)
            except Refusal as no_room:  # the store takes no writes: sell what it holds
                log.error("manifest %s not loaded: %s", self.wiring.manifest, no_room.detail)
                refused = None
            if refused is not None:
                self.record_event({"type": "manifest_conflict", "file": self.wiring.manifest,
                                   "version": manifest.version, "skus": sorted(refused.skus)})
            elif (await self.sales.manifest())["hash"] != before["hash"]:
                log.info("manifest %s loaded from %s", manifest.version, self.wiring.manifest)
        view = await self._manifest_loaded()
        if conflict := view.get("conflict"):
            log.warning("manifest file %s not loaded, %s; selling from the stored manifest %s",
                        conflict["file"], conflict_words(conflict), view["version"])
        if self.config.mqtt.url:
            from agent.uplink.session import Uplink, UplinkOutputs

            self.uplink = Uplink(self.config.mqtt, self.kit_id, self.store, self.mode,
                                 self.moment,
                                 UplinkOutputs(
                                     publish=self.events.publish,
                                     health=lambda view: self.coordinator.update(uplink=view),
                                     telemetry=self.telemetry, spawn=self.spawn,
                                     relayed=self.coordinator.outbox_changed,
                                     allocation=self.take_allocation),
                                 password=self.config.mqtt.password(self.config.source))
        self.supervisor.start("storage_watch", self.storage.run)
        self.supervisor.start("holds", self.hold_sweep.run)
        if self.config.kit.retention_days > 0:
            self.supervisor.start("retention", Retention(
                self.store, self.config.kit.retention_days, self.clock.wall).run)
        for name, reason in self.devices.start().items():
            self.supervisor.fail(name, reason)
        self.power.start()
        if intent is not None and not self.power.resume_shutdown():
            await self._shutdown_cleared()  # no power monitor to say otherwise
        nut = {"nut": self.nut.run} if self.nut is not None else {}
        for parts in (self.uplink.parts() if self.uplink else {}, self.devices.parts(),
                      self.power.parts(), nut):
            for name, run in parts.items():
                self.supervisor.start(name, run)
        self.writes.start()

    async def stop(self) -> None:
        """Stop the parts, say goodbye to the broker, finish the writes, close the store.

        Safe to cancel: the store is closed in any case, and a part that does not stop within
        :data:`STOP_TIMEOUT_S` is named in the log and left behind.
        """
        if self._stopped:
            return
        self._stopped = True
        hung: list[str] = []
        try:
            from agent.uplink.session import CONNECTION_PART

            loops = [name for name in reversed(self.supervisor.parts) if name != CONNECTION_PART]
            hung += await self.supervisor.stop(STOP_TIMEOUT_S, loops)
            if self.uplink is not None:
                await self.uplink.goodbye()
            hung += await self.supervisor.stop(STOP_TIMEOUT_S)
            self.devices.close()
            self.power.close()
            if self.timeline is not None:
                await self.store.write(lambda db: clock.note_seen(db, self.moment()))
        finally:
            self.store.close()
            if hung:
                log.warning("store closed while %s had not stopped", ", ".join(hung))

    def serving_at(self, url: str) -> None:
        """The kit serves its pages at ``url`` (known once a server on port 0 is bound)."""
        self.kit_url = url
        self.devices.wake_printer()  # receipts wait for their links

    def request_exit(self) -> None:
        """The shutdown sequence is done: the daemon exits (and the kit powers off)."""
        self.exit_requested()

    def moment(self) -> Moment:
        """Now, as the kit stamps it (the kit's timeline runs once the store is open)."""
        if self.timeline is None:
            raise RuntimeError("the kit's timeline starts with the store")
        return self.timeline.now()

    def spawn(self, name: str, job: Coroutine[Any, Any, object]) -> object:
        """Run a short job of the part ``name``; the kit tracks it and waits for it at stop."""
        return self.supervisor.spawn(name, job)

    # -- state --------------------------------------------------------------------------------

    def _mode_changed(self, state: str, reasons: list[str]) -> None:
        self.coordinator.update(mode=state, mode_reasons=reasons, latched=self.mode.latched)
        log.info("mode %s%s", state, f" ({', '.join(reasons)})" if reasons else "")
        if self.store.is_open:
            self.record_event({"type": "mode", "state": state, "reasons": reasons})

    def _state_changed(self, state: KitState, before: KitState) -> None:
        """Everything that shows the kit's state follows the coordinator's snapshot."""
        if (state.mode, state.mode_reasons) != (before.mode, before.mode_reasons):
            self.events.publish("mode", {"state": state.mode, "reasons": list(state.mode_reasons)})
        if state.uplink.get("state") != before.uplink.get("state"):
            self.events.publish("uplink", {"state": state.uplink.get("state")})
        if state.power_state != before.power_state:
            self.events.publish("power", dict(state.power))
            if self.uplink is not None:
                self.uplink.publish_telemetry_now()
        if (state.status, state.degraded, state.alerts) != \
                (before.status, before.degraded, before.alerts):
            self.events.publish("status", {"status": state.status, "degraded": state.degraded,
                                           "alerts": list(state.alerts)})
        self.devices.show(mode=state.mode, uplink=str(state.uplink.get("state", "off")),
                          power=state.power_state, alerts=list(state.led_alerts))

    async def _outbox_waiting(self) -> Mapping[str, int]:
        if not self.store.is_open:  # the shutdown closed it: what it last was
            return self.coordinator.state.waiting
        return await self.store.read(outbox.waiting)

    async def health(self) -> dict[str, Any]:
        state = await self.coordinator.current()
        return state.health(version=__version__, simulated=self.wiring.simulated,
                            uptime_s=round(time.monotonic() - self.started, 1),
                            writes=self.writes.view())

    async def telemetry(self) -> dict[str, Any]:
        """The ``telemetry/power`` payload, less ``ts`` and ``seq`` (the uplink adds them)."""
        state = await self.coordinator.current()
        power = dict(state.power) if "sources" in state.power else {
            "state": "unknown", "feeding": None, "sources": {}, "ups": None}
        for key in ("ts", "seq", "simulated_rig"):
            power.pop(key, None)
        return {"kit_id": self.kit_id, **power, "mode": state.mode,
                "queue_depth": state.queue_depth}

    def record_event(self, event: dict[str, Any]) -> None:
        """A durable event for remote ops: into the outbox, then out over the uplink."""
        self.spawn("events", self._record_event(event))

    async def _record_event(self, event: dict[str, Any], ts: str = "") -> None:
        ts = ts or self.moment().iso
        try:
            await self.store.write(lambda db: outbox.record_event(db, event, self.kit_id, ts))
        except Refusal as refused:
            if refused.code not in STORE_CODES:
                raise
            self._unwritten.append((event, ts))  # written once the store takes writes again
            return
        self.outbox_changed()

    def _storage_shown(self, view: dict[str, Any]) -> None:
        before = self.coordinator.state.storage.get("state")
        self.coordinator.update(storage=view)
        if view["state"] == before:
            return
        if (alert := STORAGE_ALERTS.get(view["state"])) is not None:
            self.events.publish("alert", {"type": alert, "reason": view["detail"] or
                                          f"{view['free_mb']} MB free", "storage": view})
        if self.store.is_open:
            self.record_event({"type": "storage", "state": view["state"],
                               "free_mb": view["free_mb"], "detail": view["detail"]})

    def _storage_recovered(self) -> None:
        """A full store takes writes again: what waited for it goes on."""
        while self._unwritten:
            self.spawn("events", self._record_event(*self._unwritten.popleft()))
        self.devices.wake_printer()
        if self.uplink is not None:
            self.uplink.retry_relayed()

    def _holds_expired(self, views: list[dict[str, Any]]) -> None:
        for view in views:
            self.events.publish("order", view)
        self._stock_changed()

    def outbox_changed(self) -> None:
        self.coordinator.outbox_changed()
        if self.uplink is not None:
            self.uplink.wake()

    async def _manifest_loaded(self) -> dict[str, Any]:
        """The manifest the kit sells, and a refused file's conflict (health shows both)."""
        view = {**await self.sales.manifest(), "conflict": await self.sales.file_conflict()}
        self.coordinator.update(manifest={"version": view["version"], "hash": view["hash"],
                                          "conflict": view["conflict"]})
        if view["conflict"] is not None:
            self.events.publish("alert", {"type": "manifest_conflict", **view["conflict"]})
        return view

    # -- the panel and the shutdown steps -----------------------------------------------------

    async def request_shutdown(self) -> None:
        """Staff held the panel's shutdown button: the orderly shutdown, at once."""
        log.warning("shutdown requested from the panel")
        if not self.power.request_shutdown("panel"):
            self.events.publish("alert", {"type": "shutdown_requested"})
            await self._record_event({"type": "shutdown_requested", "source": "panel",
                                      "detail": "no power monitor: shut the kit down by hand"})

    async def _stop_taking_orders(self) -> None:
        self.coordinator.update(refusal=SHUTDOWN_REFUSAL)
        # Durable before anything else: a restart must not sell on the battery that stopped us.
        reason = self.power.shutdown_reason or "requested"
        await self.store.write(
            lambda db: kitmeta.write_shutdown_intent(db, reason, self.moment().iso))
        log.warning("shutdown: no new orders from now on")

    async def _shutdown_cleared(self) -> None:
        """The shutdown begun before the restart no longer holds: orders are taken again."""
        await self.store.write(kitmeta.clear_shutdown_intent)
        self.coordinator.update(refusal="")
        log.warning("power is safe again: orders are taken")

    async def _flush_outbox(self, timeout_s: float) -> bool:
        # The shutdown event was handed over just before this step: let it reach the outbox.
        await self.supervisor.settle_jobs()
        uplink = self.uplink
        if uplink is None or not uplink.connected:
            return False
        return await uplink.flush(timeout_s)

    async def _publish_final(self, status: object) -> None:
        if self.uplink is not None:
            await self.uplink.publish_final_telemetry()

    async def _close_store(self) -> None:
        try:
            await self.stop()
        finally:  # even when the stop was cut short: the daemon must not serve a closed store
            self.request_exit()

    async def _mark_power_down(self, status: PowerStatus) -> str:
        """The killpower flag for the shutdown hook, when this halt is for power (on battery)."""
        if "OB" not in status.flags:
            return "on mains: no killpower flag"
        reason = f"{status.ts} {status.state}"
        path = await asyncio.to_thread(killpower.write_flag, self.wiring.state_dir, reason)
        return f"killpower flag {path}"
