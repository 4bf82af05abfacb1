"""``dropkit drill hostile-client``: one phone on the kit's Wi-Fi attacks its endpoint (headers
that never end, then a thousand requests sent half way) while another phone buys; the bounds of
docs/deploy.md ("The HTTP server's bounds") must hold. Registered in
:mod:`agent.ops.drill.scenarios`.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import Counter
from collections.abc import Iterable

from agent.config import load_config
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
ANSWER_S = 5.0
"""How long past the deadline the kit may take to answer, on a loaded machine."""
PAST_SHARE = 3
"""Connections the attacker opens past its share (``[http] max_connections_per_client``)."""
TRIES = 3
"""Tries at filling the share well inside the deadline, which a loaded machine may miss."""
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
    assert kit.config is not None  # start_kit writes the kit's config
    share = load_config(kit.config).http.max_connections_per_client
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

    refused = FLOODS + _past_the_share(s, kit, share) + _half_sent_by_the_thousand(s, kit)
    grown = _log_size(kit) - logged
    refusals = [line for line in kit.log if "refused" in line]
    s.expect(grown < LOG_LIMIT and len(refusals) <= 3,
             "the log says so in a few lines, not one per connection",
             f"{grown / 1024:.1f} KiB more, {len(refusals)} lines of refusals for {refused} "
             f"refused")
    s.check_chain(s.stop_kit())


def _past_the_share(s: Session, kit: SimKit, share: int) -> int:
    """The attacker fills its share with half-sent requests, then opens a few more: each must
    be refused at once. A try proves nothing when the share may have been freed by its deadline
    first (the machine too slow): then it is tried again. The refusals the drill saw."""
    seen = 0
    for attempt in range(1, TRIES + 1):
        verdict, refusals, observed = _probe_share(kit, share)
        seen += refusals
        if verdict is not None:
            s.expect(verdict, "past its share, the attacker is refused at once", observed)
        elif attempt < TRIES:
            s.note("not tested, the share may have been let go at its deadline first",
                   f"{observed}; again")
        else:
            s.expect(False, "the drill fills the attacker's share inside the kit's deadline",
                     f"not in {TRIES} tries (this machine is too slow to test it); the last: "
                     f"{observed}")
        freed, took = s.within(lambda: _health_from(kit, ATTACKER), DEADLINE_S + ANSWER_S, 0.05)
        if not freed:
            s.require(False, "the kit serves the attacker again once it closes its connections",
                      f"not within {took:.1f} s")
        if verdict is not None:
            break
    return seen


def _probe_share(kit: SimKit, share: int) -> tuple[bool | None, int, str]:
    """One try at the share: True when every connection past it was refused (429), False when
    one was not, None when the try cannot tell; the refusals seen, and what was seen.

    The share's connections are let go no sooner than ``DEADLINE_S`` after ``started`` (their
    deadlines start when the kit takes them in, after that). The kit takes connections in the
    order they come, so one past the share that the kit held (408, ``DEADLINE_S`` after it took
    it in) and answered before twice the deadline was taken in while the share was full: the
    kit broke its bound, if the share's own connections were all held too.
    """
    started = time.monotonic()
    held = attacks.half_sent(kit.address, share, ATTACKER)
    try:
        filled = time.monotonic() - started
        past = attacks.half_sent(kit.address, PAST_SHARE, ATTACKER)
        held += past
        answers = attacks.statuses(past, DEADLINE_S + ANSWER_S)
        answered = time.monotonic() - started
        observed = (f"connections {share + 1} to {share + PAST_SHARE} answered "
                    f"{', '.join(map(str, answers))}, {answered:.2f} s after the first of "
                    f"{share} opened ({filled:.2f} s to open them; deadline {DEADLINE_S:g} s)")
        refusals = sum(status is not None for status in answers)
        if answers == [429] * PAST_SHARE:
            return True, refusals, observed
        if set(answers) - {408, 429}:  # no answer, or not the refusal of a client's excess
            return False, refusals, observed
        if answered < 2 * DEADLINE_S:
            own = attacks.statuses(held[:share], DEADLINE_S + ANSWER_S)
            if own == [408] * share:
                return False, refusals + share, observed + f"; its first {share} all held, 408"
            observed += f"; its first {share} answered {_counts(own)}"
        return None, refusals, observed
    finally:
        attacks.close_all(held)


def _half_sent_by_the_thousand(s: Session, kit: SimKit) -> int:
    """More half-sent requests than the kit may open files: each is refused at once or held to
    the deadline, another phone's sale goes on, and the kit lets them go itself. The refusals
    the drill saw."""
    started = time.monotonic()
    held = attacks.half_sent(kit.address, HALF_SENT, ATTACKER)
    try:
        opened = time.monotonic()
        s.note(f"{ATTACKER} opens {HALF_SENT} connections and sends half a request on each",
               f"and holds them ({opened - started:.1f} s to open)")
        answer, took = _sale(kit)
        s.expect(answer is not None and answer.status == 201 and took < SALE_LIMIT_S,
                 "a sale from the other phone is taken at once",
                 f"{answer.status if answer else 'no answer'} in {took:.2f} s")
        answers = Counter(attacks.statuses(held, DEADLINE_S + ANSWER_S))
        answered = time.monotonic() - opened
        s.expect(set(answers) <= {408, 429} and answers[408],
                 "each is refused at once (429) or held to the deadline (408), never unanswered",
                 _counts(answers.elements()))
        # while the drill still holds every one of them: the kit closed them itself
        freed, took = s.within(lambda: _health_from(kit, ATTACKER), ANSWER_S, 0.05)
        s.expect(freed, "the kit lets the half-sent requests go after its deadline",
                 f"the last answered {answered:.1f} s after the last was opened (deadline "
                 f"{DEADLINE_S:g} s), {ATTACKER} served again {took:.1f} s later")
    finally:
        attacks.close_all(held)
    return answers.total() - answers[None]


def _counts(statuses: Iterable[int | None]) -> str:
    """``1036 x 429, 64 x 408``: how many of each status, the most first."""
    return ", ".join(f"{n} x {status or 'none'}" for status, n in
                     Counter(statuses).most_common())


def _health_from(kit: SimKit, source: str) -> bool:
    try:
        return kit.request("GET", "/api/health", source=source, timeout=2).status == 200
    except OSError:
        return False
