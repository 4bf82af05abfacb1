"""The HTTP server's own answer to a request it cannot parse, in the API's JSON error shape.

uvicorn answers a request its parser refuses (a made-up method, a broken chunk, bytes that are
not HTTP) itself, before the app sees it, with a plain-text 400. uvicorn takes the protocol as a
class (``uvicorn.Config(http=...)``): this one is uvicorn's own, with that answer in JSON.
What the parser lets through reaches the app and its errors (:mod:`agent.web.errors`).
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from agent.web.errors import status_of

UNREADABLE = json.dumps({"error": "bad_request",
                         "detail": "the kit could not read this HTTP request"}).encode()


class JsonErrorsProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    def send_400_response(self, msg: str) -> None:
        self.transport.write(
            b"HTTP/1.1 %d Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s"
            % (status_of("bad_request"), len(UNREADABLE), UNREADABLE))
        self.transport.close()
