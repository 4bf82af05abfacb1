"""Reading a request's body and fields: every refusal a client's input can earn, none a 500."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import ClientDisconnect, Request

from agent.core.errors import Refusal

MAX_TEXT = 500
"""The longest text field (a reason, an action name) the API takes."""


async def read_json(request: Request, limit: int) -> Any:
    """The request's JSON body, refused with a clear error when it is not JSON or too big."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise Refusal("unsupported_media_type", "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refusal("body_too_large", f"the body may be at most {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise Refusal("body_too_large", f"the body may be at most {limit} bytes")
    except ClientDisconnect:  # gone, or cut off by the server's deadline: nobody to answer
        raise Refusal("request_timeout", "the body did not arrive; send it again") from None
    try:
        return json.loads(body)
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
