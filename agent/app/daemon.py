"""The daemon: one asyncio loop that serves the kit's local endpoint until it is told to stop.

``dropkit run`` and ``dropkit sim`` both come here; they differ only in what they wire (real
drivers or simulators, :class:`agent.app.kit.Wiring`) and where the state lives. The start is
strict (a bad config, manifest or store stops it with one line) and the stop is orderly: on
SIGTERM or SIGINT the server stops taking connections, finishes the requests in flight, and the
store commits what it was given before it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import Iterator
from importlib import resources
from typing import TYPE_CHECKING, Any

from agent.app.kit import Kit, StartError, Wiring
from agent.app.sdnotify import keep_watchdog_fed, notify, watchdog_interval
from agent.config import Config
from agent.config.receipt import kit_url

if TYPE_CHECKING:
    from agent.web.server import HttpLimits
    from agent.web.tally import Tally

log = logging.getLogger("dropkit")


def demo_manifest() -> str:
    return str(resources.files("agent") / "demo-manifest.toml")


def http_limits(config: Config) -> HttpLimits:
    """The server's limits from ``[http]``, with the connections kept to half the process's
    file descriptors (the rest are the kit's: the store, devices, the uplink)."""
    import resource

    from agent.web.server import HttpLimits

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = config.http.max_connections
    most = wanted if soft == resource.RLIM_INFINITY else min(wanted, max(8, soft // 2))
    if most < wanted:
        log.warning("[http] max_connections %d lowered to %d: the process may open %d files",
                    wanted, most, soft)
    return HttpLimits(max_connections=most,
                      max_connections_per_client=config.http.max_connections_per_client,
                      request_timeout_s=config.http.request_timeout_s)


def _resource_conditions(tally: Tally) -> None:
    """asyncio logs a traceback for each accept() that finds no free file descriptor, and
    tries a whole backlog of them each time: count them instead."""
    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == "socket.accept() out of system resource":
            tally.note("connection not accepted: no free file descriptor",
                       str(context.get("exception")))
        else:
            loop.default_exception_handler(context)
    asyncio.get_running_loop().set_exception_handler(handle)


def _server(kit: Kit) -> Any:
    import uvicorn

    from agent.web.app import build_app
    from agent.web.server import protocol_class
    from agent.web.tally import Tally

    limits = http_limits(kit.config)
    tally = Tally(logging.getLogger("dropkit.http"))
    _resource_conditions(tally)

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
            kit.events.close()
            super().handle_exit(sig, frame)

        def stop_serving(self) -> None:
            self.handle_exit(signal.SIGTERM, None)

    config = uvicorn.Config(build_app(kit), host=kit.wiring.host, port=kit.wiring.port,
                            lifespan="off", access_log=False, log_config=None,
                            http=protocol_class(limits, tally), ws="none", loop="asyncio",
                            timeout_keep_alive=limits.keep_alive_s,
                            backlog=128, timeout_graceful_shutdown=5, server_header=False,
                            proxy_headers=False)
    return Server(config)


async def serve(config: Config, wiring: Wiring) -> None:
    """Run the daemon until SIGTERM or SIGINT."""
    await serve_kit(Kit(config, wiring))


async def serve_kit(kit: Kit) -> None:
    """Start ``kit`` and serve it on ``kit.wiring``'s address until SIGTERM, SIGINT or
    :meth:`Kit.request_exit`; then stop it."""
    wiring = kit.wiring
    await kit.start()
    # What start-up made (modules, config, the app) lives as long as the process: keep it out
    # of the collector's passes, which would otherwise walk it again and again.
    gc.freeze()
    server = _server(kit)
    kit.exit_requested = server.stop_serving
    watchdog = None
    try:
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.01)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            kit.serving_at(kit_url(wiring.host, port))
            host = wiring.host if wiring.host not in ("0.0.0.0", "::") else "127.0.0.1"
            url = f"http://{host}:{port}/"
            log.info("kit %s serving %s", kit.kit_id, url)
            notify(f"READY=1\nSTATUS=serving {url}")
            if (interval := watchdog_interval()) is not None:
                watchdog = asyncio.create_task(keep_watchdog_fed(interval))
            if wiring.on_ready:
                wiring.on_ready(url, kit)
        await serving
        if not server.started:
            raise StartError(f"cannot listen on {wiring.host}:{wiring.port}")
    finally:
        notify("STOPPING=1")
        if watchdog is not None:
            watchdog.cancel()
        await kit.stop()
        await kit.power.wait_for_shutdown()
        log.info("stopped; store closed")
