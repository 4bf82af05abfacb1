"""``dropkit drill hostile-client``: one phone on the kit's Wi-Fi attacks its endpoint (headers
that never end, then a thousand requests sent half way) while another phone buys; the bounds of
docs/deploy.md ("The HTTP server's bounds") must hold. Registered in
:mod:`agent.ops.drill.scenarios`.
"""

from __future__ import annotations

import concurrent.futures
import time

from agent.ops import attacks
from agent.ops.drill.runner import Session
from agent.ops.harness import Answer, SimKit

ATTACKER, CUSTOMER = "127.0.0.1", "127.0.0.2"
"""Two clients to the kit: all of 127.0.0.0/8 is loopback."""
FLOODS, FLOOD_BYTES = 3, 20 << 20
HALF_SENT = 1100
OPEN_FILES = 1024
"""The unit's LimitNOFILE=: fewer than the half-sent connections."""
DEADLINE_S = 3.0
"""``[http] request_timeout_s`` for the drill (10 s on a kit), to keep it short."""
SALE_LIMIT_S = 2.0
MEMORY_LIMIT_MB = 32.0
LOG_LIMIT = 1 << 20


def _sale(kit: SimKit) -> tuple[Answer | None, float]:
    """A sale from the customer's phone, and how long it took (None: no answer in time)."""
    started = time.monotonic()
    try:
        answer: Answer | None = kit.place([{"sku": "DRILL-TEE", "qty": 1}], source=CUSTOMER,
                                          timeout=SALE_LIMIT_S)
    except OSError:
        answer = None
    return answer, time.monotonic() - started


def _log_size(kit: SimKit) -> int:
    return sum(len(line) for line in kit.log)


def hostile_client(s: Session) -> None:
    kit = s.start_kit(http={"request_timeout_s": DEADLINE_S})
    kit.limit_open_files(OPEN_FILES)
    s.note("the kit may open files", f"{OPEN_FILES}, as its unit's LimitNOFILE=")
    memory, logged = kit.resident_mb(), _log_size(kit)
    peak, sales = memory, []
    with concurrent.futures.ThreadPoolExecutor(FLOODS) as pool:
        floods = [pool.submit(attacks.header_flood, kit.address, FLOOD_BYTES, ATTACKER)
                  for _ in range(FLOODS)]
        s.note(f"{ATTACKER} floods {FLOODS} requests with headers",
               f"{FLOOD_BYTES >> 20} MB each, while {CUSTOMER} buys")
        while not all(flood.done() for flood in floods) or not sales:
            sales.append(_sale(kit))
            peak = max(peak, kit.resident_mb())
    statuses = [flood.result().status for flood in floods]
    s.expect(statuses == [431] * FLOODS, "each flood is cut short",
             f"{', '.join(map(str, statuses))}")
    s.expect(peak - memory < MEMORY_LIMIT_MB, "the kit's memory stays put",
             f"{memory:.0f} MB before, {peak:.0f} MB at most")
    sold = [took for answer, took in sales if answer is not None and answer.status == 201]
    s.expect(len(sold) == len(sales) and max(sold) < SALE_LIMIT_S,
             "the other phone's sales go on meanwhile",
             f"{len(sold)} of {len(sales)} x 201, the slowest in {max(sold, default=0):.2f} s")

    held = attacks.half_sent(kit.address, HALF_SENT, ATTACKER)
    opened = time.monotonic()
    try:
        s.note(f"{ATTACKER} opens {HALF_SENT} connections and sends half a request on each",
               "and holds them")
        last = attacks.status_line(held[-1])
        s.expect(last == 503, "past its share, the attacker is refused at once",
                 f"the {HALF_SENT}th connection answered {last}")
        answer, took = _sale(kit)
        s.expect(answer is not None and answer.status == 201 and took < SALE_LIMIT_S,
                 "a sale from the other phone is taken at once",
                 f"{answer.status if answer else 'no answer'} in {took:.2f} s")
        freed, took = s.within(lambda: _health_from(kit, ATTACKER), DEADLINE_S + 5, 0.2,
                               since=opened)
        s.expect(freed, "the kit lets the half-sent requests go after its deadline",
                 f"{ATTACKER} served again {took:.1f} s after its last one (deadline "
                 f"{DEADLINE_S:g} s)")
    finally:
        attacks.close_all(held)
    grown = _log_size(kit) - logged
    refusals = [line for line in kit.log if "refused" in line]
    s.expect(grown < LOG_LIMIT and len(refusals) <= 3,
             "the log says so in a few lines, not one per connection",
             f"{grown / 1024:.1f} KiB more, {len(refusals)} lines of refusals for "
             f"{1 + HALF_SENT + FLOODS} refused")
    s.check_chain(s.stop_kit())


def _health_from(kit: SimKit, source: str) -> bool:
    try:
        return kit.request("GET", "/api/health", source=source, timeout=2).status == 200
    except OSError:
        return False
