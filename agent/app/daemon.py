"""The daemon: one asyncio loop that owns the kit's state and serves the local endpoint.

``dropkit run`` and ``dropkit sim`` both come here; they differ only in what they wire (real
drivers or simulators) and where the state lives. The start is strict (a bad config, manifest or
store stops it with one line) and the stop is orderly: on SIGTERM or SIGINT the server stops
taking connections, finishes the requests in flight, and the store commits what it was given
before it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.app.events import EventHub
from agent.app.sales import Orders
from agent.app.sdnotify import keep_watchdog_fed, notify, watchdog_interval
from agent.config import Config
from agent.core import outbox
from agent.core.clock import now_iso
from agent.core.errors import Refusal
from agent.core.manifest import ManifestConflict, ManifestError, read_manifest
from agent.core.mode import Mode
from agent.fieldio.service import Devices
from agent.power.service import KitPower
from agent.store import Store
from agent.web.auth import StaffAuth

if TYPE_CHECKING:
    from agent.uplink.session import Uplink

log = logging.getLogger("dropkit")


class StartError(RuntimeError):
    """The daemon cannot start; the message is the one line the operator needs."""


@dataclass(frozen=True)
class Wiring:
    """What differs between ``run`` and ``sim``."""

    simulated: bool
    state_dir: Path
    host: str
    port: int
    manifest: str
    on_ready: Callable[[str, Agent], None] | None = None


def staff_token(config: Config, state_dir: Path) -> str:
    """The configured token, else one kept in the state directory (made on first start)."""
    token = config.staff_token()
    if token:
        return token
    path = state_dir / "staff-token"
    if path.exists():
        return path.read_text().strip()
    token = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
        f.flush()
        os.fsync(f.fileno())
    log.info("made a staff token in %s", path)
    return token


def demo_manifest() -> str:
    return str(resources.files("agent") / "demo-manifest.toml")


class Agent:
    """The kit's state and the parts that act on it, built before the loop serves."""

    def __init__(self, config: Config, wiring: Wiring) -> None:
        self.config, self.wiring = config, wiring
        self.kit_id = config.kit_id
        self.started = time.monotonic()
        self.store = Store(wiring.state_dir / "dropkit.db")
        self.orders = Orders(self.store, self.kit_id, config.orders.max_lines,
                             config.orders.max_qty,
                             print_receipts=config.printer.enabled)
        self.events = EventHub()
        self.mode = Mode()
        self.mode.on_change(self._mode_changed)
        self.uplink: Uplink | None = None
        self.devices = Devices(self)
        self.power = KitPower(self)
        self.exit_requested: Callable[[], None] = lambda: None
        self._stopped = False
        self._background: set[asyncio.Task[Any]] = set()

    async def start(self) -> None:
        """Open the store, restore the staff latch and load the manifest named in config."""
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
        except Exception as exc:
            raise StartError(f"store {self.store.path}: {exc}") from None
        latched = await self.store.read(
            lambda db: db.execute("SELECT value FROM meta WHERE key = 'staff_latch'").fetchone())
        self.mode.set_latch(bool(latched and latched[0] == "1"))
        if manifest is not None:
            try:
                if await self.orders.load_manifest(manifest, self.wiring.manifest):
                    log.info("manifest %s loaded from %s", manifest.version, self.wiring.manifest)
            except ManifestConflict as exc:
                raise StartError(f"manifest {self.wiring.manifest}: {exc}") from None
        if self.config.mqtt.url:
            from agent.uplink.session import Uplink

            self.uplink = Uplink(self.config.mqtt, self.kit_id, self.store, self.mode,
                                 self.events, self.telemetry,
                                 password=self.config.mqtt.password(self.config.source))
            await self.uplink.start()
        await self.devices.start()
        await self.power.start()

    async def stop(self) -> None:
        """Stop the devices, say goodbye to the broker, finish the writes, close the store."""
        if self._stopped:
            return
        self._stopped = True
        await self.power.stop()
        await self.devices.stop()
        if self.uplink is not None:
            await self.uplink.stop()
        await self.settle_background()
        self.store.close()

    def request_exit(self) -> None:
        """The shutdown sequence is done: the daemon exits (and the kit powers off)."""
        self.exit_requested()

    async def settle_background(self) -> None:
        """Wait for the background writes started so far."""
        await asyncio.gather(*self._background, return_exceptions=True)

    def background(self, job: Any) -> None:
        """Run ``job`` on the loop; the agent waits for it before closing the store."""
        task = asyncio.get_running_loop().create_task(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _mode_changed(self, state: str, reasons: list[str]) -> None:
        self.events.publish("mode", {"state": state, "reasons": reasons})
        log.info("mode %s%s", state, f" ({', '.join(reasons)})" if reasons else "")
        if self.store.is_open:
            event = {"type": "mode", "state": state, "reasons": reasons}
            self.background(self.record_event(event))

    async def record_event(self, event: dict[str, Any]) -> None:
        """A durable event for remote ops: into the outbox, then out over the uplink."""
        await self.store.write(lambda db: outbox.record_event(db, event, self.kit_id, now_iso()))
        self.outbox_changed()

    def outbox_changed(self) -> None:
        if self.uplink is not None:
            self.uplink.wake()

    def sale_made(self, view: dict[str, Any]) -> None:
        """A sale is durable: tell the staff pages, the uplink and the printer."""
        self.events.publish("order", view)
        self.outbox_changed()
        self.devices.sale_made()

    def power_state(self) -> str:
        """NUT-style power status words, ``unknown`` without power sensors."""
        return self.power.state()

    async def request_shutdown(self) -> None:
        """Staff held the panel's shutdown button: the orderly shutdown, at once."""
        log.warning("shutdown requested from the panel")
        if not self.power.request_shutdown("panel"):
            self.events.publish("alert", {"type": "shutdown_requested"})
            await self.record_event({"type": "shutdown_requested", "source": "panel",
                                     "detail": "no power monitor: shut the kit down by hand"})

    def check_taking_orders(self) -> None:
        """Raise the 503 that new orders get once the shutdown has begun."""
        if self.power.refusal:
            raise Refusal("shutting_down", self.power.refusal, retry_after=300)

    async def confirm_online(self, view: dict[str, Any]) -> dict[str, Any]:
        """Online, wait a short while for HQ to settle a new sale; else it stays queued."""
        if self.uplink is None or self.mode.state != "online" or not self.config.mqtt.ack_wait_s:
            return view
        settled = await self.uplink.wait_for_ack(view["order_id"], self.config.mqtt.ack_wait_s)
        return settled or view

    async def telemetry(self) -> dict[str, Any]:
        """The ``telemetry/power`` payload, less ``ts`` and ``seq`` (the uplink adds them)."""
        status = self.power.status
        power = status.to_dict() if status else {"state": "unknown", "feeding": None,
                                                 "sources": {}, "ups": None}
        power.pop("ts", None)
        power.pop("seq", None)
        return {"kit_id": self.kit_id, **power, "mode": self.mode.state,
                "queue_depth": await self.orders.queue_depth()}

    async def set_staff_latch(self, latched: bool) -> None:
        await self.store.write(lambda db: db.execute(
            "INSERT INTO meta (key, value) VALUES ('staff_latch', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value", ("1" if latched else "0",)))
        self.mode.set_latch(latched)
        log.info("staff latch %s: mode %s", "set" if latched else "released", self.mode.state)

    async def health(self) -> dict[str, Any]:
        manifest = await self.orders.manifest()
        return {
            "kit_id": self.kit_id,
            "version": __version__,
            "simulated": self.wiring.simulated,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "mode": self.mode.state,
            "mode_reasons": self.mode.reasons,
            "staff_latch": self.mode.latched,
            "uplink": self.uplink.health() if self.uplink else {"state": "off"},
            "queue_depth": await self.orders.queue_depth(),
            "power": self.power.health(),
            "devices": self.devices.health(),
            "manifest": {"version": manifest["version"], "hash": manifest["hash"]},
        }


def _server(agent: Agent) -> Any:
    import uvicorn

    from agent.web.app import build_app

    class Server(uvicorn.Server):
        # uvicorn re-raises a captured SIGTERM after its shutdown, which would kill the process
        # before the store is closed; the daemon owns its own orderly stop instead.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)

        def handle_exit(self, sig: int, frame: Any) -> None:
            # Staff pages' event streams end first, or the stop would wait them out.
            agent.events.close()
            super().handle_exit(sig, frame)

        def stop_serving(self) -> None:
            self.handle_exit(signal.SIGTERM, None)

    config = uvicorn.Config(build_app(agent), host=agent.wiring.host, port=agent.wiring.port,
                            lifespan="off", access_log=False, log_config=None,
                            http="auto", loop="asyncio", timeout_graceful_shutdown=5,
                            server_header=False, proxy_headers=False)
    return Server(config)


async def serve(config: Config, wiring: Wiring) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    agent = Agent(config, wiring)
    await agent.start()
    # What start-up made (modules, config, the app) lives as long as the process: keep it out
    # of the collector's passes, which would otherwise walk it again and again.
    gc.freeze()
    server = _server(agent)
    agent.exit_requested = server.stop_serving
    watchdog = None
    try:
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            host = wiring.host if wiring.host not in ("0.0.0.0", "::") else "127.0.0.1"
            url = f"http://{host}:{port}/"
            log.info("kit %s serving %s", agent.kit_id, url)
            notify(f"READY=1\nSTATUS=serving {url}")
            if (interval := watchdog_interval()) is not None:
                watchdog = asyncio.create_task(keep_watchdog_fed(interval))
            if wiring.on_ready:
                wiring.on_ready(url, agent)
        await serving
        if not server.started:
            raise StartError(f"cannot listen on {wiring.host}:{wiring.port}")
    finally:
        notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
        await agent.stop()
        await agent.power.wait_for_shutdown()
        log.info("stopped; store closed")
