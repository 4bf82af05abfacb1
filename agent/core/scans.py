"""What a scanned text means: a SKU on sale, one of this kit's receipts, a customer's pickup
code (the QR on their phone, :mod:`agent.core.holds`), or nothing known.

A receipt's QR code holds its link (``http://10.42.0.1:8080/r/kit-07/12/<hash>``, or the
``[receipt] verify_url`` the co-op set); older receipts hold the bare 64-hex hash. Either finds
the order through the hash. Pure functions over the store's connection;
:class:`agent.fieldio.scans.ScanRouter` runs them for each scan. A SKU wins over a receipt::

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:")
    >>> db.row_factory = sqlite3.Row
    >>> _ = db.executescript(
    ...     "CREATE TABLE items (sku TEXT, active INTEGER);"
    ...     "CREATE TABLE receipts (hash TEXT, order_id TEXT);"
    ...     "INSERT INTO items VALUES ('TEA', 1);"
    ...     f"INSERT INTO receipts VALUES ('{'ab' * 32}', 'order-1');")
    >>> scan_meaning(db, "TEA")
    {'kind': 'sku', 'sku': 'TEA'}
    >>> scan_meaning(db, "AB" * 32)["order_id"], scan_meaning(db, "HELLO")["kind"]
    ('order-1', 'unknown')
    >>> scan_meaning(db, f"http://10.42.0.1:8080/r/kit-07/1/{'ab' * 32}")["order_id"]
    'order-1'
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from agent.core.holds import QR_PREFIX, find_code, pickup_code

RECEIPT_HASH = re.compile(r"[0-9a-fA-F]{64}")
"""An older receipt's QR code: its 64-hex-digit hash (upper case too, for scanners set that
way)."""
_HASH_IN_LINK = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
MAX_LINK = 500
"""The longest scanned link read as a receipt's (the kit prints at most 200 characters)."""


def receipt_hash(text: str) -> str | None:
    """The receipt hash a scan holds, lower case: a bare hash, or the one 64-hex-digit run of
    an ``http(s)`` link; None for anything else.

    >>> receipt_hash("HTTPS://COOP.EXAMPLE/R/KIT-07/12/" + "AB" * 32) == "ab" * 32
    True
    >>> receipt_hash("https://coop.example/about"), receipt_hash("ab" * 31)
    (None, None)
    """
    if RECEIPT_HASH.fullmatch(text):
        return text.lower()
    if len(text) <= MAX_LINK and text[:8].lower().startswith(("http://", "https://")):
        found = _HASH_IN_LINK.findall(text)
        if len(found) == 1:
            return found[0].lower()
    return None


def sku_on_sale(db: sqlite3.Connection, sku: str) -> bool:
    """True when ``sku`` is an item of the current manifest."""
    row = db.execute("SELECT 1 FROM items WHERE sku = ? AND active = 1", (sku,)).fetchone()
    return row is not None


def lookup_receipt(db: sqlite3.Connection, receipt_hash: str) -> str | None:
    """The order a receipt hash belongs to (its sale, void or refund), or None."""
    row = db.execute("SELECT order_id FROM receipts WHERE hash = ?",
                     (receipt_hash.lower(),)).fetchone()
    return None if row is None else row["order_id"]


def scan_meaning(db: sqlite3.Connection, text: str) -> dict[str, Any]:
    """What a scanned text is: ``sku`` on sale, ``receipt`` (its hash and order, None when
    the hash is not in this kit's chain; a receipt's link or its bare hash), ``pickup`` (its
    code and order, None when no reservation has it) or ``unknown``. A SKU wins over the
    others."""
    if sku_on_sale(db, text):
        return {"kind": "sku", "sku": text}
    if text.upper().startswith(QR_PREFIX) and (code := pickup_code(text)) is not None:
        return {"kind": "pickup", "code": code, "order_id": find_code(db, code)}
    if (found := receipt_hash(text)) is not None:
        return {"kind": "receipt", "hash": found, "order_id": lookup_receipt(db, found)}
    return {"kind": "unknown", "text": text}
