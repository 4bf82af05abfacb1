"""Reading a request's body, fields and parameters: every refusal a client's input can earn,
none a 500.

Numbers in paths and queries are ASCII digits only (``str.isdigit`` takes '²' and other
digits ``int`` refuses), of bounded length and range:

    >>> whole_number("42", "limit", 1, 500)
    42
    >>> whole_number("²", "limit", 1, 500)
    Traceback (most recent call last):
    ...
    agent.core.errors.Refusal: limit must be a whole number from 1 to 500
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.types import Message

from agent.core.errors import Refusal

MAX_TEXT = 500
"""The longest text field (a reason, an action name) the API takes."""
DIGITS = frozenset("0123456789")


def ascii_digits(text: str, most: int = 19) -> bool:
    """``text`` is 1 to ``most`` ASCII digits."""
    return 0 < len(text) <= most and set(text) <= DIGITS


def whole_number(text: str, name: str, low: int, high: int) -> int:
    """``text`` as a whole number from ``low`` to ``high``; 422 naming ``name`` otherwise."""
    if not ascii_digits(text, len(str(high))) or not low <= int(text) <= high:
        raise Refusal("invalid", f"{name} must be a whole number from {low} to {high}")
    return int(text)


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data = dict(pairs)
    if len(data) < len(pairs):
        repeated = Counter(key for key, _ in pairs).most_common(1)[0][0]
        raise Refusal("bad_json", f"the key {repeated[:40]!r} appears twice in one object")
    return data


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise Refusal("bad_json", f"{text[:40]} is too big a number")
    return number


def _no_constant(name: str) -> None:
    raise Refusal("bad_json", f"{name} is not a JSON number")


def _check_media_type(request: Request) -> None:
    media_type, *params = request.headers.get("content-type", "").split(";")
    if media_type.strip().lower() != "application/json":
        raise Refusal("unsupported_media_type", "send the body as application/json")
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and \
                value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise Refusal("unsupported_media_type", "send the body as UTF-8 "
                          "(charset=utf-8, or no charset)")


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body as sent, refused (413) past ``limit`` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None and (not ascii_digits(declared.strip()) or int(declared) > limit):
        raise Refusal("body_too_large", f"the body may be at most {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Refusal("body_too_large", f"the body may be at most {limit} bytes")
    except ClientDisconnect:  # the client left, or the server's deadline cut it off (it
        # answered 408 itself): nobody hears this answer, but nothing is sold half-read
        raise Refusal("request_timeout", "the body did not arrive; send it again") from None
    return bytes(body)


def with_body(request: Request, body: bytes) -> Request:
    """``request`` again, its body (already read, as ``body``) to be read once more."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await request.receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, refused with a clear error when it is not JSON or too big.

    Only UTF-8 is read (415 for another ``charset``); an object with a key twice, ``NaN``,
    ``Infinity`` or a number too big for a float is not JSON the kit takes (400).
    """
    _check_media_type(request)
    body = await read_body(request, limit)
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_no_repeated_keys,
                          parse_float=_finite, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise Refusal("bad_json", "the body is not valid UTF-8 JSON") from None


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body (422 for any other JSON)."""
    data = await read_json(request, limit)
    if not isinstance(data, dict):
        raise Refusal("invalid", "the body must be a JSON object")
    return data


async def optional_json_object(request: Request, limit: int) -> dict[str, Any]:
    """A JSON object body, or ``{}`` when the request has no body."""
    if not request.headers.get("content-length", "0").strip("0") and \
            "chunked" not in request.headers.get("transfer-encoding", ""):
        return {}
    return await json_object(request, limit)


def field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    """``data[name]`` of type ``kind`` (``default`` when absent); 422 naming the field when it
    is of another type (a bool is never a number) or a text longer than :data:`MAX_TEXT`."""
    value = data.get(name, default)
    if not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool) or \
            (isinstance(value, str) and len(value) > MAX_TEXT):
        raise Refusal("invalid", f"{name} has the wrong type")
    return value
