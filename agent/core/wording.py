"""What a receipt says, in words: an order's state, its money and its time, as the paper and
the kit's receipt page print them (one wording for both).

    >>> from agent.config import ReceiptConfig
    >>> words = Wording(ReceiptConfig(currency="EUR", time_zone="Europe/Berlin"))
    >>> words.money(4100), words.time("2025-06-01T14:03:22+00:00")
    ('EUR 41.00', '2025-06-01 16:03 CEST')
    >>> state_word({"status": "refunded", "payment": {"method": "cash", "status": "paid"}})
    'REFUNDED'
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agent.config import ReceiptConfig

UNSET_CLOCK = "(kit clock was not set)"
"""Printed under the time of a sale made before the kit's clock was set."""


def state_word(order: dict[str, Any]) -> str:
    """The order as it stands, in one word for the paper: ``VOIDED``, ``REFUNDED``, ``PAID`` or
    ``NOT PAID`` (a card payment pending, failed, or a reservation not paid yet)."""
    if order["status"] == "voided":
        return "VOIDED"
    if order["status"] == "refunded":
        return "REFUNDED"
    return "PAID" if order["payment"]["status"] == "paid" else "NOT PAID"


def format_cents(cents: int) -> str:
    """An amount of cents with two decimals.

    >>> format_cents(1250), format_cents(5), format_cents(-1999)
    ('12.50', '0.05', '-19.99')
    """
    whole, fraction = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{whole}.{fraction:02d}"


class Wording:
    """Money and time as ``[receipt]`` says to show them."""

    def __init__(self, config: ReceiptConfig) -> None:
        self.config = config

    def money(self, cents: int) -> str:
        """``EUR 12.50``, or ``€12.50`` with a ``currency_symbol``."""
        if self.config.currency_symbol:
            return f"{self.config.currency_symbol}{format_cents(cents)}"
        return f"{self.config.currency} {format_cents(cents)}"

    def time(self, iso_timestamp: str) -> str:
        """Local time with the zone's abbreviation: ``2025-06-01 16:03 CEST``."""
        moment = datetime.fromisoformat(iso_timestamp).astimezone(self.config.zone)
        zone = moment.tzname()
        return moment.strftime("%Y-%m-%d %H:%M") + (f" {zone}" if zone else "")
