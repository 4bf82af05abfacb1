"""Stream tickets: how the staff page opens the staff event stream without its token in a URL.

A browser's ``EventSource`` cannot send an ``Authorization`` header, and a token in a query
string ends up in logs and browser history. So a staff call (``POST /api/staff/stream-ticket``)
gets a ticket, and ``GET /api/events?ticket=...`` spends it: a ticket opens one stream, within
:data:`TICKET_TTL_S` of being made, and is worth nothing afterwards, so one read from a log is
already spent. At most :data:`MAX_TICKETS` wait at once (the oldest go first).

    >>> tickets = StreamTickets()
    >>> ticket = tickets.issue(now=0.0)
    >>> tickets.redeem(ticket, now=1.0), tickets.redeem(ticket, now=2.0)
    (True, False)
    >>> tickets.redeem(tickets.issue(now=0.0), now=TICKET_TTL_S + 1)
    False
"""

from __future__ import annotations

import secrets

TICKET_TTL_S = 30.0
"""How long a ticket waits to be spent."""
MAX_TICKETS = 64
"""Tickets made and not yet spent, at most."""


class StreamTickets:
    def __init__(self) -> None:
        self._expiry: dict[str, float] = {}  # in the order they were made

    def issue(self, now: float) -> str:
        """A new ticket, good until ``now`` + :data:`TICKET_TTL_S`."""
        for ticket in [t for t, expiry in self._expiry.items() if expiry < now]:
            del self._expiry[ticket]
        while len(self._expiry) >= MAX_TICKETS:
            del self._expiry[next(iter(self._expiry))]
        ticket = secrets.token_urlsafe(24)
        self._expiry[ticket] = now + TICKET_TTL_S
        return ticket

    def redeem(self, ticket: str, now: float) -> bool:
        """Spend ``ticket``: True once, if it was made here and has not expired."""
        expiry = self._expiry.pop(ticket, None)
        return expiry is not None and now <= expiry
