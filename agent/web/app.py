"""The local order endpoint and the staff page, as a Starlette app.

Errors are always JSON, ``{"error": CODE, "detail": ...}`` with a 4xx status; bad input never
earns a 500. Customers on the kit's Wi-Fi can read the manifest and health, place orders and look
up one order; everything else needs the staff token.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent.core.clock import now_iso
from agent.core.errors import Refusal
from agent.core.manifest import ManifestConflict, ManifestError, parse_manifest
from agent.core.printjobs import jobs_to_check, mark_checked
from agent.web.errors import error, refusal_response

if TYPE_CHECKING:
    from agent.app.daemon import Agent

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
Handler = Callable[[Request], Awaitable[Response]]


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, refused with a clear error when it is not JSON or too big."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Refusal("unsupported_media_type", "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refusal("body_too_large", f"the body may be at most {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refusal("body_too_large", f"the body may be at most {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise Refusal("bad_json", "the body is not valid UTF-8 JSON") from None


def build_app(agent: Agent) -> Starlette:
    """The HTTP face of ``agent``."""
    limit = agent.config.http.max_body_bytes

    def staff(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            client = request.client.host if request.client else "?"
            agent.staff_auth.check(request.headers.get("authorization"), client,
                                   time.monotonic())
            return await handler(request)
        return guarded

    def order_id_of(request: Request) -> str:
        return request.path_params["order_id"]

    async def optional_json(request: Request) -> dict[str, Any]:
        if not request.headers.get("content-length", "0").strip("0") and \
                "chunked" not in request.headers.get("transfer-encoding", ""):
            return {}
        data = await read_json(request, limit)
        if not isinstance(data, dict):
            raise Refusal("invalid", "the body must be a JSON object")
        return data

    def field(data: dict[str, Any], name: str, kind: type | tuple[type, ...],
              default: Any) -> Any:
        value = data.get(name, default)
        if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool) or \
                (isinstance(value, str) and len(value) > 500):
            raise Refusal("invalid", f"{name} has the wrong type")
        return value

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404)
        return FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def health(request: Request) -> Response:
        return JSONResponse(await agent.health())

    async def manifest(request: Request) -> Response:
        return JSONResponse(await agent.orders.manifest())

    async def place_order(request: Request) -> Response:
        agent.check_taking_orders()
        trace_id = request.headers.get("x-trace-id") or uuid.uuid4().hex
        if len(trace_id) > 64 or not trace_id.isascii():
            trace_id = uuid.uuid4().hex
        order_request = agent.orders.parse(await read_json(request, limit))
        view, created = await agent.orders.place(order_request, trace_id)
        if created:
            agent.sale_made(view)
            log.info("order %s sold: receipt #%d total %d cents trace %s",
                     view["order_id"], view["receipt"]["seq"], view["total_cents"], trace_id)
            view = await agent.confirm_online(view)
        return JSONResponse(view, 201 if created else 200, headers={"X-Trace-Id": trace_id})

    async def get_order(request: Request) -> Response:
        order_id = order_id_of(request)
        view = await agent.orders.get(order_id) if len(order_id) <= 64 else None
        if view is None:
            raise Refusal("not_found", f"no order {order_id[:64]}")
        return JSONResponse(view)

    async def list_orders(request: Request) -> Response:
        limit_param = request.query_params.get("limit", "50")
        if not limit_param.isdigit() or not 1 <= int(limit_param) <= 500:
            raise Refusal("invalid", "limit must be a whole number from 1 to 500")
        return JSONResponse({"orders": await agent.orders.recent(int(limit_param))})

    async def staff_check(request: Request) -> Response:
        return JSONResponse({"staff": True})

    async def void(request: Request) -> Response:
        data = await optional_json(request)
        view = await agent.orders.void(order_id_of(request),
                                       field(data, "reason", str, "payment failed"))
        agent.events.publish("order", view)
        agent.outbox_changed()
        return JSONResponse(view)

    async def refund(request: Request) -> Response:
        data = await optional_json(request)
        view = await agent.orders.refund(order_id_of(request),
                                         field(data, "restock", bool, False),
                                         field(data, "reason", str, "refunded by staff"))
        agent.events.publish("order", view)
        agent.outbox_changed()
        return JSONResponse(view)

    async def payment(request: Request) -> Response:
        data = await read_json(request, limit)
        result = data.get("result") if isinstance(data, dict) else None
        if result not in ("paid", "failed"):
            raise Refusal("invalid", "send {\"result\": \"paid\"} or {\"result\": \"failed\"}")
        view = await agent.orders.settle_payment(order_id_of(request), result == "paid")
        agent.events.publish("order", view)
        return JSONResponse(view)

    async def reprint(request: Request) -> Response:
        job = await agent.devices.reprint(order_id_of(request))
        return JSONResponse({"job_id": job, "order_id": order_id_of(request)})

    async def print_jobs(request: Request) -> Response:
        return JSONResponse({"unsure": await agent.store.read(jobs_to_check)})

    async def print_job_checked(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        if not await agent.store.write(lambda db: mark_checked(db, job_id, now_iso())):
            raise Refusal("not_unsure", f"print job {job_id} is not waiting for a check")
        return JSONResponse({"job_id": job_id, "state": "checked"})

    async def sim_control(request: Request) -> Response:
        sim, power = agent.devices.sim, agent.power.sim
        if sim is None:
            raise Refusal("not_simulated", "simulator controls exist in dropkit sim only")
        data = await read_json(request, limit)
        if not isinstance(data, dict):
            raise Refusal("invalid", "the body must be a JSON object")
        device = request.path_params["device"]
        try:
            if device == "power" and power is not None:
                action = field(data, "action", str, "")
                if action == "pull_mains":
                    power.pull_mains()
                elif action == "restore_mains":
                    power.restore_mains()
                elif action in ("unplug", "plug"):
                    getattr(power, action)(field(data, "sensor", str, ""))
                elif action == "load":
                    power.set_load(float(field(data, "amps", (int, float), 0.8)))
                elif action == "mains_volts":  # a sagging supply: a brown-out drill
                    power.set_mains_volts(float(field(data, "volts", (int, float), 5.1)))
                elif action == "scenario":
                    power.run_scenario(field(data, "name", str, "live"))
                    power.speed = float(field(data, "speed", (int, float), 1.0))
                else:
                    raise ValueError("action must be pull_mains, restore_mains, unplug, plug, "
                                     "load, mains_volts or scenario")
                return JSONResponse(power.snapshot())
            if device == "scan":
                sim.scan(field(data, "text", str, ""))
            elif device == "button":
                button = field(data, "button", str, "")
                if field(data, "long", bool, False):
                    agent.background(sim.long_press(button))
                else:
                    sim.press(button)
            elif device == "paper":
                sim.set_paper(field(data, "level", str, ""))
            elif device == "printer":
                sim.set_printer_silent(field(data, "silent", bool, False))
                sim.set_cover_open(field(data, "cover_open", bool, False))
            else:
                raise Refusal("not_found", f"no simulator control {device[:40]}")
        except ValueError as exc:
            raise Refusal("invalid", str(exc)) from None
        return JSONResponse(sim.state())

    async def set_mode(request: Request) -> Response:
        data = await read_json(request, limit)
        if not isinstance(data, dict) or not isinstance(data.get("offline"), bool):
            raise Refusal("invalid", "send {\"offline\": true} or {\"offline\": false}")
        await agent.set_staff_latch(data["offline"])
        return JSONResponse({"mode": agent.mode.state, "reasons": agent.mode.reasons})

    async def load_manifest(request: Request) -> Response:
        try:
            new = parse_manifest(await read_json(request, limit * 16))
            changed = await agent.orders.load_manifest(new, "staff")
        except ManifestError as exc:
            raise Refusal("invalid_manifest", str(exc)) from None
        except ManifestConflict as exc:
            raise Refusal("manifest_conflict", str(exc), skus=sorted(exc.skus)) from None
        view = await agent.orders.manifest()
        agent.events.publish("manifest", {"version": view["version"], "hash": view["hash"]})
        return JSONResponse({"changed": changed, **view})

    async def events(request: Request) -> Response:
        async def stream():
            with agent.events.listen() as queue:
                yield f"event: health\ndata: {json.dumps(await agent.health())}\n\n"
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if event is None:
                        return  # the daemon is stopping; the page reconnects to the next one
                    kind, data = event
                    yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refusal)
        return refusal_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        return JSONResponse({"error": codes.get(exc.status_code, "bad_request"),
                             "detail": exc.detail or ""}, exc.status_code)

    async def crashed(request: Request, exc: Exception) -> Response:
        # Never the answer to bad input (the tests hunt for these); logged with its traceback.
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error("internal", "the kit could not answer; nothing was changed "
                     "unless a later lookup shows it")

    routes = [
        Route("/", index),
        Route("/static/{name}", static),
        Route("/api/health", health),
        Route("/api/manifest", manifest),
        Route("/api/orders", place_order, methods=["POST"]),
        Route("/api/orders", staff(list_orders), methods=["GET"]),
        Route("/api/orders/{order_id}", get_order),
        Route("/api/events", events),
        Route("/api/staff/check", staff(staff_check)),
        Route("/api/staff/orders/{order_id}/void", staff(void), methods=["POST"]),
        Route("/api/staff/orders/{order_id}/refund", staff(refund), methods=["POST"]),
        Route("/api/staff/orders/{order_id}/payment", staff(payment), methods=["POST"]),
        Route("/api/staff/orders/{order_id}/reprint", staff(reprint), methods=["POST"]),
        Route("/api/staff/print-jobs", staff(print_jobs)),
        Route("/api/staff/print-jobs/{job_id:int}/checked", staff(print_job_checked),
              methods=["POST"]),
        Route("/api/staff/sim/{device}", staff(sim_control), methods=["POST"]),
        Route("/api/staff/mode", staff(set_mode), methods=["POST"]),
        Route("/api/staff/manifest", staff(load_manifest), methods=["PUT"]),
    ]
    return Starlette(routes=routes,
                     exception_handlers={Refusal: refused, HTTPException: http_error,
                                         Exception: crashed})
