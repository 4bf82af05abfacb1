"""The ``[receipt]`` section: what the paper says about the shop, its money, its time and where
a receipt is checked."""

from __future__ import annotations

import re
import string
import zoneinfo
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from agent.config.checks import check

WIFI_ADDRESS = "10.42.0.1"
"""The kit's address on its own Wi-Fi (the image's access point, docs/deploy.md)."""
KIT_PAGE = "/r/{kit}/{seq}/{hash}"
"""The kit's own page for a receipt (agent/web/receipt_page.py)."""
MAX_URL_CHARS = 200
"""The longest receipt link, filled in: its QR code still fits a 58 mm roll."""
MAX_FOOTER_LINES, MAX_FOOTER_CHARS = 8, 400
_PLACEHOLDERS = {"kit", "seq", "hash"}
_SAMPLE = {"kit": "k" * 64, "seq": 10**9, "hash": "0" * 64}
_ISO_CODE = re.compile(r"[A-Z]{3}")


def kit_url(host: str, port: int) -> str:
    """Where a phone on the kit's Wi-Fi reaches the kit serving on ``host:port``: that address,
    or :data:`WIFI_ADDRESS` for a server on every address.

    >>> kit_url("0.0.0.0", 8080), kit_url("127.0.0.1", 8123), kit_url("fd00::1", 80)
    ('http://10.42.0.1:8080/', 'http://127.0.0.1:8123/', 'http://[fd00::1]:80/')
    """
    address = WIFI_ADDRESS if host in ("", "0.0.0.0", "::") else host
    return f"http://[{address}]:{port}/" if ":" in address else f"http://{address}:{port}/"


def _time_zone(value: str) -> bool:
    if value == "":
        return True
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _fields(template: str) -> set[str] | None:
    """The placeholders of ``template``, or None when it is not a plain ``{name}`` template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return None
    names = {name for _, name, spec, conversion in parsed if name is not None}
    plain = all(not spec and conversion is None for _, name, spec, conversion in parsed
                if name is not None)
    return names if plain else None


def _verify_url(value: str) -> bool:
    if value == "":
        return True
    names = _fields(value)
    if names is None or not names <= _PLACEHOLDERS or "hash" not in names:
        return False
    filled = value.format(**_SAMPLE)
    try:
        url = urlsplit(filled)
    except ValueError:
        return False
    return (url.scheme in ("http", "https") and bool(url.hostname) and filled.isascii()
            and not any(char.isspace() for char in filled) and len(filled) <= MAX_URL_CHARS)


def _footer(value: str) -> bool:
    return len(value) <= MAX_FOOTER_CHARS and len(value.splitlines()) <= MAX_FOOTER_LINES


@dataclass(frozen=True)
class ReceiptConfig:
    """``[receipt]``: the shop on the paper, its money and time, and the link in the QR code.

    >>> ReceiptConfig(verify_url="https://coop.example/r/{kit}/{seq}/{hash}").link(
    ...     "kit-07", 12, "ab" * 32, kit_url=None)[:34]
    'https://coop.example/r/kit-07/12/a'
    >>> ReceiptConfig().link("kit-07", 12, "ab" * 32, kit_url=None) is None  # not serving yet
    True
    """

    shop_name: str = field(default="", metadata=check(
        "a name of at most 64 characters on one line",
        lambda v: len(v) <= 64 and "\n" not in v))
    """The name at the top of every receipt; empty: ``[kit] name``."""
    footer: str = field(default="", metadata=check(
        f"at most {MAX_FOOTER_LINES} lines and {MAX_FOOTER_CHARS} characters", _footer))
    """Lines printed at the bottom (contact, returns); a TOML multi-line string."""
    currency: str = field(default="EUR", metadata=check(
        'an ISO 4217 code of three capital letters, e.g. "EUR"', _ISO_CODE.fullmatch))
    currency_symbol: str = field(default="", metadata=check(
        'a symbol of at most 3 characters, e.g. "€" (empty: the code)',
        lambda v: len(v) <= 3 and not any(char.isspace() for char in v)))
    time_zone: str = field(default="", metadata=check(
        'an IANA time zone name, e.g. "Europe/Berlin" (empty: the system\'s)', _time_zone))
    verify_url: str = field(default="", metadata=check(
        f"an http(s) URL template with {{hash}} (and {{kit}}, {{seq}}), at most "
        f"{MAX_URL_CHARS} characters filled in (empty: the kit's own page)", _verify_url))
    unpaid_slip: bool = False
    """Print a NOT PAID slip when a card sale is made (its receipt prints once it is paid)."""

    @cached_property
    def zone(self) -> zoneinfo.ZoneInfo | None:
        """The receipts' time zone; None for the system's own."""
        return zoneinfo.ZoneInfo(self.time_zone) if self.time_zone else None

    @property
    def footer_lines(self) -> tuple[str, ...]:
        return tuple(line.rstrip() for line in self.footer.strip("\n").splitlines())

    def link(self, kit: str, seq: int, hash: str, *, kit_url: str | None) -> str | None:
        """The URL a receipt's QR code holds: ``verify_url`` filled in, or the kit's own page
        under ``kit_url`` (None while the kit does not know where it serves)."""
        values: dict[str, Any] = {"kit": kit, "seq": seq, "hash": hash}
        if self.verify_url:
            return self.verify_url.format(**values)
        if kit_url is None:
            return None
        return kit_url.rstrip("/") + KIT_PAGE.format(**values)
