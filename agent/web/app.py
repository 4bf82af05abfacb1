"""The local order endpoint, the customers' shop and the staff till, as a Starlette app.

Errors are always JSON, ``{"error": CODE, "detail": ...}`` with a 4xx status; bad input never
earns a 500. Customers on the kit's Wi-Fi get the shop (``/``): they can read the manifest and
health, reserve (an order without the staff credential is a reservation, paid at the stall) and
look up one order by its id; nothing they can call settles a payment, voids, refunds or
reprints. Everything else needs the staff credential; the till is ``/till``. The kit behind it
is a :class:`KitAPI`.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from agent.core.errors import Refusal
from agent.core.holds import pickup_code
from agent.core.manifest import ManifestConflict, ManifestError, parse_manifest
from agent.core.orders import PAYMENT_METHODS, valid_order_id
from agent.web import sim
from agent.web.api import KitAPI
from agent.web.auth import staff_request
from agent.web.bodies import (
    ascii_digits,
    field,
    json_object,
    optional_json_object,
    read_body,
    read_json,
    whole_number,
    with_body,
)
from agent.web.errors import error, refusal_response
from agent.web.receipt_page import receipt_route
from agent.web.stream import Streams
from agent.web.tickets import TICKET_TTL_S, StreamTickets

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
Handler = Callable[[Request], Awaitable[Response]]
MAX_RECENT = 500
MAX_JOB_ID = 2**63 - 1
"""SQLite's largest row id."""


def client_of(request: Request) -> str:
    """The client's address (what the per-address limits count)."""
    return request.client.host if request.client else "?"


def build_app(kit: KitAPI) -> Starlette:
    """The HTTP face of ``kit``."""
    limit = kit.max_body_bytes
    streams = Streams()
    files = {path.name for path in STATIC.iterdir() if path.is_file()}
    tickets = StreamTickets()

    arrivals = itertools.count(1)
    """The kit's arrival order of the orders, as their requests were read whole."""

    def staff(handler: Handler, body_limit: int = limit) -> Handler:
        async def guarded(request: Request) -> Response:
            body = await read_body(request, body_limit)  # a signature covers the body
            kit.check_staff(staff_request(request, body), client_of(request))
            return await handler(with_body(request, body))
        return guarded

    def is_staff(request: Request, body: bytes) -> bool:
        """True with a staff credential, False with none; a wrong one is refused."""
        if "authorization" not in request.headers and \
                "x-staff-signature" not in request.headers:
            return False
        kit.check_staff(staff_request(request, body), client_of(request))
        return True

    def order_id_of(request: Request) -> str:
        order_id = request.path_params["order_id"]
        if not valid_order_id(order_id):
            raise Refusal("not_found", f"no order {order_id[:64]}")
        return order_id

    def page(name: str) -> Handler:
        async def serve(request: Request) -> Response:
            return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})
        return serve

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            raise HTTPException(404)
        return FileResponse(STATIC / name, headers={"Cache-Control": "no-cache"})

    async def health(request: Request) -> Response:
        return JSONResponse(await kit.health())

    async def manifest(request: Request) -> Response:
        return JSONResponse(await kit.sales.manifest())

    async def place_order(request: Request) -> Response:
        kit.check_taking_orders()
        trace_id = request.headers.get("x-trace-id") or uuid.uuid4().hex
        if len(trace_id) > 64 or not trace_id.isascii():
            trace_id = uuid.uuid4().hex
        body = await read_body(request, limit)  # a staff signature covers the body
        staff_sale = is_staff(request, body)
        data = await read_json(with_body(request, body), limit)
        # The request is in, whole: its arrival number is taken now, and nothing from here to
        # the writer's queue awaits, so orders are decided in the order the kit finished
        # reading them (docs/stall.md, "A fair drop").
        arrival = next(arrivals)
        order_request = kit.sales.parse(data)
        if staff_sale:
            view, created = await kit.sales.place(order_request, trace_id)
        else:
            try:
                view, created = await kit.sales.reserve(order_request, client_of(request),
                                                        arrival, trace_id)
            except Refusal as refused:
                refused.extra.setdefault("arrival", arrival)
                raise
        if created and staff_sale:
            kit.sale_made(view)
            log.info("order %s sold: receipt #%d total %d cents trace %s",
                     view["order_id"], view["receipt"]["seq"], view["total_cents"], trace_id)
            view = await kit.confirm_online(view)
        elif created:
            kit.reservation_changed(view)
            log.info("order %s reserved: code %s total %d cents arrival %d trace %s",
                     view["order_id"], view["reservation"]["code"], view["total_cents"],
                     arrival, trace_id)
        return JSONResponse(view, 201 if created else 200, headers={"X-Trace-Id": trace_id})

    async def get_order(request: Request) -> Response:
        order_id = order_id_of(request)
        view = await kit.sales.get(order_id)
        if view is None:
            raise Refusal("not_found", f"no order {order_id[:64]}")
        return JSONResponse(view)

    async def pickup_qr(request: Request) -> Response:
        from agent.web.qr import qr_svg

        order_id = order_id_of(request)
        view = await kit.sales.get(order_id)
        if view is None or "reservation" not in view:
            raise Refusal("not_found", f"no reservation {order_id[:64]}")
        return Response(qr_svg(view["reservation"]["qr_text"]), media_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=86400"})

    async def reservations(request: Request) -> Response:
        return JSONResponse({"reservations": await kit.sales.reservations()})

    async def find_reservation(request: Request) -> Response:
        text = request.path_params["code"]
        code = pickup_code(text)
        view = None if code is None else await kit.sales.find_reservation(code)
        if view is None:
            raise Refusal("not_found", f"no reservation with the code {text[:20]}: check the "
                          "six letters and digits on the customer's screen")
        return JSONResponse(view)

    async def list_orders(request: Request) -> Response:
        count = whole_number(request.query_params.get("limit", "50"), "limit", 1, MAX_RECENT)
        return JSONResponse({"orders": await kit.sales.recent(count)})

    async def staff_check(request: Request) -> Response:
        return JSONResponse({"staff": True})

    async def void(request: Request) -> Response:
        data = await optional_json_object(request, limit)
        view = await kit.sales.void(order_id_of(request),
                                    field(data, "reason", str, "payment failed"))
        if view["receipt"] is None:  # a reservation let go: nothing for HQ
            kit.reservation_changed(view)
        else:
            kit.order_changed(view, relay=True)
        return JSONResponse(view)

    async def refund(request: Request) -> Response:
        data = await optional_json_object(request, limit)
        view = await kit.sales.refund(order_id_of(request),
                                      field(data, "restock", bool, False),
                                      field(data, "reason", str, "refunded by staff"))
        kit.order_changed(view, relay=True)
        return JSONResponse(view)

    async def payment(request: Request) -> Response:
        data = await json_object(request, limit)
        result, method = data.get("result"), data.get("method")
        if result not in ("paid", "failed") or set(data) - {"result", "method"}:
            raise Refusal("invalid", "send {\"result\": \"paid\"} or {\"result\": \"failed\"}, "
                          "and for a reservation the \"method\": \"cash\" or \"card\"")
        if method is not None and method not in PAYMENT_METHODS:
            raise Refusal("invalid", "method must be \"cash\" or \"card\"")
        view, became_sale = await kit.sales.settle_payment(order_id_of(request),
                                                           result == "paid", method)
        if became_sale:
            kit.sale_made(view)
            log.info("reservation %s paid by %s: receipt #%d", view["order_id"], method,
                     view["receipt"]["seq"])
        else:
            kit.order_changed(view, relay=False)
        return JSONResponse(view)

    async def reprint(request: Request) -> Response:
        job = await kit.reprint(order_id_of(request))
        return JSONResponse({"job_id": job, "order_id": order_id_of(request)})

    async def test_slip(request: Request) -> Response:
        return JSONResponse(await kit.print_test_slip())

    async def print_jobs(request: Request) -> Response:
        return JSONResponse({"unsure": await kit.print_jobs_to_check()})

    async def print_job_checked(request: Request) -> Response:
        text = request.path_params["job_id"]
        if not ascii_digits(text) or not 1 <= int(text) <= MAX_JOB_ID:
            raise Refusal("not_found", f"no print job {text[:40]}")
        job_id = int(text)
        if not await kit.mark_print_job_checked(job_id):
            raise Refusal("not_unsure", f"print job {job_id} is not waiting for a check")
        return JSONResponse({"job_id": job_id, "state": "checked"})

    async def sim_control(request: Request) -> Response:
        devices = kit.simulated_devices
        if devices is None:
            raise Refusal("not_simulated", "simulator controls exist in dropkit sim only")
        data = await json_object(request, limit)
        return JSONResponse(sim.control(devices, kit.simulated_power, kit.spawn,
                                        request.path_params["device"], data))

    async def set_mode(request: Request) -> Response:
        data = await read_json(request, limit)
        if not isinstance(data, dict) or not isinstance(data.get("offline"), bool):
            raise Refusal("invalid", "send {\"offline\": true} or {\"offline\": false}")
        return JSONResponse(await kit.set_staff_latch(data["offline"]))

    async def load_manifest(request: Request) -> Response:
        try:
            new = parse_manifest(await read_json(request, limit * 16))
            view = await kit.load_manifest(new)
        except ManifestError as exc:
            raise Refusal("invalid_manifest", str(exc)) from None
        except ManifestConflict as exc:
            raise Refusal("manifest_conflict", str(exc), skus=sorted(exc.skus)) from None
        return JSONResponse(view)

    async def stream_ticket(request: Request) -> Response:
        return JSONResponse({"ticket": tickets.issue(time.monotonic()),
                             "expires_in_s": TICKET_TTL_S})

    async def events(request: Request) -> Response:
        ticket = request.query_params.get("ticket")
        streams.check(client_of(request))  # a refused stream does not spend its ticket
        if ticket is not None and not tickets.redeem(ticket, time.monotonic()):
            raise Refusal("unauthorized", "this stream ticket is spent, expired or made up: "
                          "get a new one from POST /api/staff/stream-ticket")
        return streams.response(kit, client_of(request), staff=ticket is not None)

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
        Route("/", page("shop.html")),
        Route("/till", page("till.html")),
        Route("/static/{name}", static),
        Route("/api/health", health),
        Route("/api/manifest", manifest),
        Route("/api/orders", place_order, methods=["POST"]),
        Route("/api/orders", staff(list_orders), methods=["GET"]),
        Route("/api/orders/{order_id}", get_order),
        Route("/api/orders/{order_id}/pickup.svg", pickup_qr),
        Route("/api/events", events),
        receipt_route(kit),
        Route("/api/staff/check", staff(staff_check)),
        Route("/api/staff/stream-ticket", staff(stream_ticket), methods=["POST"]),
        Route("/api/staff/reservations", staff(reservations)),
        Route("/api/staff/reservations/{code}", staff(find_reservation)),
        Route("/api/staff/orders/{order_id}/void", staff(void), methods=["POST"]),
        Route("/api/staff/orders/{order_id}/refund", staff(refund), methods=["POST"]),
        Route("/api/staff/orders/{order_id}/payment", staff(payment), methods=["POST"]),
        Route("/api/staff/orders/{order_id}/reprint", staff(reprint), methods=["POST"]),
        Route("/api/staff/printer/test-slip", staff(test_slip), methods=["POST"]),
        Route("/api/staff/print-jobs", staff(print_jobs)),
        Route("/api/staff/print-jobs/{job_id}/checked", staff(print_job_checked),
              methods=["POST"]),
        Route("/api/staff/sim/{device}", staff(sim_control), methods=["POST"]),
        Route("/api/staff/mode", staff(set_mode), methods=["POST"]),
        Route("/api/staff/manifest", staff(load_manifest, limit * 16), methods=["PUT"]),
    ]
    return Starlette(routes=routes,
                     exception_handlers={Refusal: refused, HTTPException: http_error,
                                         Exception: crashed})
