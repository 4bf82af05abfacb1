"""HQ's small HTTP side (``dropkit hq --http-port``): a receipt anyone can check, and
``/metrics`` for ops.

- ``GET /r/{kit}/{seq}/{hash}``: the receipt's page, what a customer's phone opens from the
  receipt's QR code: whether HQ recorded that link of that kit, when it was sold (by the kit's
  clock), its total and what became of it (sold, voided, refunded; or refused by HQ, and why).
  A receipt HQ does not hold (another hash, another kit, a seq it never got) is ``404`` with a
  page saying so; ``?format=json`` gives the same as JSON.
- ``GET /metrics``: :meth:`agent.hq.metrics.Metrics.render`.

Served by uvicorn on a thread of its own with the kit's bounded protocol
(:mod:`agent.web.server`: a head, a deadline and a connection count for every client). The
ledger is read through its reading connection (SQLite) or its pool (PostgreSQL); a ledger that
cannot be reached is ``503``, never a traceback.
"""

from __future__ import annotations

import html
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from agent.hq.ledger import Ledger, sold_at
from agent.hq.metrics import Metrics

log = logging.getLogger("dropkit.hq")

HASH = re.compile(r"[0-9a-f]{64}")
MAX_KIT = 64


def receipt(ledger: Ledger, kit_id: str, seq: int, link_hash: str) -> dict[str, Any] | None:
    """What HQ knows of that receipt, or None when it holds no such link."""
    with ledger.db.reading() as tx:
        link = tx.one("SELECT type, order_id, fault, received_at FROM links WHERE kit_id = ? "
                      "AND seq = ? AND hash = ?", (kit_id, seq, link_hash))
        if link is None:
            return None
        sale = tx.one("SELECT * FROM sales WHERE kit_id = ? AND order_id = ?",
                      (kit_id, link["order_id"]))
        later = {r["type"] for r in tx.all("SELECT type FROM links WHERE kit_id = ? AND "
                                           "order_id = ? AND type != 'sale' AND fault = ''",
                                           (kit_id, link["order_id"]))}
    if sale is None:
        state = "not recorded as a sale"
    elif sale["result"] != "accepted":
        state = f"refused by HQ: {sale['reason']}"
    else:
        state = "refunded" if "refund" in later else "voided" if "void" in later else "sold"
    return {"recorded": True, "kit": kit_id, "seq": seq, "hash": link_hash,
            "link": link["type"], "order_id": link["order_id"],
            "sold_at": sold_at(sale) if sale else "",
            "total_cents": sale["total_cents"] if sale else None,
            "state": state, "chain": link["fault"] or "checked"}


def page(found: dict[str, Any] | None, kit_id: str, seq: int) -> str:
    title = "Receipt recorded" if found else "Receipt not recorded"
    if found is None:
        rows = [("Kit", kit_id), ("Receipt", f"#{seq}"),
                ("Recorded", "no: the co-op holds no such receipt from this kit")]
    else:
        total = found["total_cents"]
        rows = [("Kit", kit_id), ("Receipt", f"#{seq} ({found['link']})"), ("Recorded", "yes"),
                ("Sold", found["sold_at"] or "-"),
                ("Total", "-" if total is None else f"{total / 100:.2f}"),
                ("State", found["state"]), ("Chain", found["chain"])]
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                    for k, v in rows)
    return (f"<!doctype html><html lang=en><meta charset=utf-8><meta name=viewport "
            f"content='width=device-width'><title>{title}</title><h1>{title}</h1>"
            f"<table>{cells}</table></html>")


def build_app(ledger: Ledger, metrics: Metrics) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    def receipt_page(request: Request) -> Response:
        kit_id, seq = request.path_params["kit"], request.path_params["seq"]
        link_hash = request.path_params["hash"]
        valid = 0 < len(kit_id) <= MAX_KIT and 0 < seq < 2**53 and HASH.fullmatch(link_hash)
        try:
            found = receipt(ledger, kit_id, seq, link_hash) if valid else None
        except ledger.db.transient:
            return PlainTextResponse("the co-op's ledger is not reachable; try again soon",
                                     503, headers={"Retry-After": "30"})
        status = 200 if found else 404
        if request.query_params.get("format") == "json":
            return JSONResponse(found or {"recorded": False, "kit": kit_id, "seq": seq}, status)
        return HTMLResponse(page(found, kit_id, seq), status)

    def metrics_page(request: Request) -> Response:
        try:
            gauges = ledger.gauges()
        except ledger.db.transient:
            gauges = None
        return PlainTextResponse(metrics.render(gauges),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found", 404)

    return Starlette(routes=[Route("/r/{kit}/{seq:int}/{hash}", receipt_page),
                             Route("/metrics", metrics_page)],
                     exception_handlers={404: not_found, 405: not_found})


@dataclass
class WebServer:
    """The running server; :meth:`close` stops it."""

    server: Any
    thread: threading.Thread

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def serve(ledger: Ledger, metrics: Metrics, host: str, port: int) -> WebServer:
    """Serve on a thread of its own; returns once it listens."""
    import uvicorn

    from agent.web.server import HttpLimits, protocol_class
    from agent.web.tally import Tally

    limits = HttpLimits(max_connections=256, max_connections_per_client=32)
    config = uvicorn.Config(build_app(ledger, metrics), host=host, port=port, lifespan="off",
                            access_log=False, log_config=None, ws="none", loop="asyncio",
                            http=protocol_class(limits, Tally(logging.getLogger("dropkit.http"))),
                            timeout_keep_alive=limits.keep_alive_s, server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="hq-http", daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        thread.join(0.05)
    if not server.started:
        raise OSError(f"HQ could not serve HTTP on {host}:{port}")
    log.info("HQ serves receipts and metrics on http://%s:%d", host, port)
    return WebServer(server, thread)
