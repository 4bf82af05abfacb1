"""The kit's page for one receipt, ``GET /r/{kit}/{seq}/{hash}``: what a phone opens from a
receipt's QR code. Anyone may read it (the link's 64-hex hash cannot be guessed).

It says whether the kit recorded that receipt and, when it did, the order as it stands: its
number, its state (``PAID``, ``NOT PAID``, ``REFUNDED``, ``VOIDED``), when it was sold and
closed, its lines and total. A link the kit has not recorded is ``404`` with a page that says
so; a malformed one too. HTML for a browser (a client that accepts ``text/html``); JSON for
any other (the record, or the API's ``{"error": "not_found", "detail": ...}``).
"""

from __future__ import annotations

import html
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from agent.web.api import KitAPI
from agent.web.bodies import ascii_digits

ROUTE = "/r/{kit}/{seq}/{hash}"
_HASH = re.compile(r"[0-9a-fA-F]{64}")
_KIT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_MAX_SEQ = 2**63 - 1
_HEADERS = {"Cache-Control": "no-store",  # the state changes: a refund, a void
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
_STYLE = ("body{font:16px/1.4 system-ui,sans-serif;margin:0 auto;max-width:28rem;padding:1rem}"
          "h1{font-size:1.3rem}.state{font-size:2rem;font-weight:700;padding:.3rem .6rem;"
          "display:inline-block;border:3px solid}.PAID,.ok{color:#075e2b}.bad{color:#9b1c1c}"
          "table{width:100%;border-collapse:collapse}td{padding:.2rem 0}"
          "td:last-child{text-align:right}.total td{font-weight:700;border-top:1px solid}")
_KIND = {"sale": "Receipt", "void": "Void slip", "refund": "Refund slip"}


def receipt_route(kit: KitAPI) -> Route:
    async def receipt(request: Request) -> Response:
        params = request.path_params
        record = None
        if (_KIT.fullmatch(params["kit"]) and ascii_digits(params["seq"])
                and 1 <= int(params["seq"]) <= _MAX_SEQ and _HASH.fullmatch(params["hash"])):
            record = await kit.receipt_record(params["kit"], int(params["seq"]),
                                              params["hash"].lower())
        browser = "text/html" in request.headers.get("accept", "")
        if record is None:
            detail = f"kit {kit.kit_id} has no record of this receipt"
            if not browser:
                return JSONResponse({"error": "not_found", "detail": detail}, 404,
                                    headers=_HEADERS)
            return HTMLResponse(_page("Not recorded", f"<h1>Not recorded</h1><p class=bad>"
                                      f"{html.escape(detail)}: it is not a receipt of this "
                                      f"kit, or its link was changed.</p>"), 404,
                                headers=_HEADERS)
        if not browser:
            return JSONResponse({"recorded": True, **record}, headers=_HEADERS)
        return HTMLResponse(_page(f"Order #{record['number']}", _body(record)),
                            headers=_HEADERS)

    return Route(ROUTE, receipt)


def _body(record: dict[str, Any]) -> str:
    e = html.escape
    state = record["state"]
    rows = "".join(f"<tr><td>{line['qty']} × {e(line['name'])}</td><td>{e(line['amount'])}"
                   f"</td></tr>" for line in record["lines"])
    closed = (f"<p>{'Refunded' if state == 'REFUNDED' else 'Voided'} "
              f"{e(record['closed_at'])}</p>" if record["closed_at"] else "")
    return (f"<h1>{e(record['shop_name'])}</h1>"
            f"<p class=ok>✓ {_KIND[record['kind']]} recorded by kit {e(record['kit_id'])} "
            f"on {e(record['recorded_at'])} (entry #{record['seq']} of its receipt chain)</p>"
            f"<h2>Order #{record['number']}</h2>"
            f"<p class=\"state {'PAID' if state == 'PAID' else 'bad'}\">{e(state)}</p>"
            f"<p>Sold {e(record['sold_at'])}, {e(record['payment'])}</p>{closed}"
            f"<table>{rows}<tr class=total><td>Total</td><td>{e(record['total'])}</td></tr>"
            f"</table>")


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html lang=en><meta charset=utf-8>"
            f"<meta name=viewport content=\"width=device-width,initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style><body>{body}</body>"
            f"</html>")
