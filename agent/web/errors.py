"""The HTTP status for each refusal code: the one place the kit maps its words to HTTP.

    >>> status_of("sold_out"), status_of("shutting_down"), status_of("storage_full")
    (409, 503, 507)
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from agent.core.errors import Refusal

STATUS: dict[str, int] = {
    # the request itself
    "bad_json": 400,
    "bad_request": 400,
    "unauthorized": 401,
    "stale_signature": 401,
    "forbidden": 403,
    "bad_signature": 403,
    "replayed": 403,
    "not_found": 404,
    "not_simulated": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "invalid": 422,
    "invalid_manifest": 422,
    "unknown_sku": 422,
    "too_many_attempts": 429,
    "too_many_connections": 429,
    "headers_too_large": 431,
    # the rules of sale
    "order_id_reused": 409,
    "sold_out": 409,
    "order_closed": 409,
    "paid": 409,
    "payment_settled": 409,
    "not_unsure": 409,
    "manifest_conflict": 409,
    "not_open": 409,
    "limit_reached": 409,
    "hold_expired": 409,
    "reservation_unpaid": 409,
    "printer_disabled": 409,
    # the kit
    "shutting_down": 503,
    "store_lost": 503,
    "store_damaged": 503,
    "storage_full": 507,
    "busy": 503,
    "internal": 500,
}


def status_of(code: str) -> int:
    """The HTTP status of a refusal code; a code nobody mapped is a bad request."""
    return STATUS.get(code, 400)


def error(code: str, detail: str, **extra: object) -> JSONResponse:
    """The API's error body, ``{"error": code, "detail": ...}``, with ``Retry-After`` when
    ``retry_after`` is given."""
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else None
    return JSONResponse({"error": code, "detail": detail, **extra}, status_of(code),
                        headers=headers)


def refusal_response(refusal: Refusal) -> JSONResponse:
    return error(refusal.code, refusal.detail, **refusal.extra)
