"""The receipt chain: every sale, void and refund is a link hashed over the one before it.

``hash = SHA-256(previous hash as 64 hex characters + canonical JSON of the entry)``, the first
entry chained to 64 zeros. Canonical JSON is UTF-8 with sorted keys and no spaces. A receipt's
link, printed as a QR code (a URL naming the kit, ``seq`` and ``hash``), lets anyone check later
that the kit recorded that sale (:func:`find_link`)::

    >>> link = chain_hash(GENESIS_HASH, {"kind": "sale", "seq": 1})
    >>> len(link), link == chain_hash(GENESIS_HASH, {"seq": 1, "kind": "sale"})
    (64, True)
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

GENESIS_HASH = "0" * 64


def canonical_json(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, entry: dict[str, Any] | str) -> str:
    body = entry if isinstance(entry, str) else canonical_json(entry)
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def append(db: sqlite3.Connection, kind: str, order_id: str,
           entry: dict[str, Any]) -> tuple[int, str]:
    """Add the next link inside the caller's transaction; returns its ``(seq, hash)``.

    ``entry`` gets ``kind``, ``order_id`` and ``seq`` filled in before it is hashed.
    """
    last = db.execute("SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev_hash = (last["seq"] + 1, last["hash"]) if last else (1, GENESIS_HASH)
    body = canonical_json({**entry, "kind": kind, "order_id": order_id, "seq": seq})
    link = chain_hash(prev_hash, body)
    db.execute("INSERT INTO receipts (seq, kind, order_id, body, prev_hash, hash) "
               "VALUES (?, ?, ?, ?, ?, ?)", (seq, kind, order_id, body, prev_hash, link))
    return seq, link


def find_link(db: sqlite3.Connection, seq: int, link_hash: str) -> dict[str, Any] | None:
    """Link ``seq`` of the chain when its hash is ``link_hash`` (what a receipt's QR code
    names): its ``seq``, ``kind``, ``order_id`` and ``created_at``; None when the kit has no
    such link."""
    row = db.execute("SELECT seq, kind, order_id, body FROM receipts WHERE seq = ? AND hash = ?",
                     (seq, link_hash)).fetchone()
    if row is None:
        return None
    return {"seq": row["seq"], "kind": row["kind"], "order_id": row["order_id"],
            "created_at": json.loads(row["body"])["created_at"]}


def closing_link(db: sqlite3.Connection, order_id: str, sale_seq: int) -> dict[str, Any] | None:
    """The void or refund link of the order sold at link ``sale_seq``, or None while it is
    open (the links after its sale are read, by their sequence: no index on orders)."""
    link = db.execute("SELECT seq, kind, hash, body FROM receipts WHERE seq > ? AND "
                      "order_id = ? AND kind IN ('void', 'refund') ORDER BY seq LIMIT 1",
                      (sale_seq, order_id)).fetchone()
    if link is None:
        return None
    body = json.loads(link["body"])
    return {"kind": link["kind"], "seq": link["seq"], "hash": link["hash"],
            "created_at": body["created_at"], "reason": body.get("reason", ""),
            "restock": body.get("restock")}


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify` found: how many links were good and the first broken one, if any."""

    links: int
    broken_seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None


def verify(db: sqlite3.Connection, sale_matches_order: Any = None) -> ChainReport:
    """Walk the chain from the first link; stop at the first broken one and say why.

    ``sale_matches_order(db, entry)`` may return a reason when a sale's entry no longer matches
    the order kept in the store (an edited order breaks the chain as surely as an edited link).
    """
    expected_seq, prev_hash, links = 1, GENESIS_HASH, 0
    for row in db.execute("SELECT seq, kind, order_id, body, prev_hash, hash FROM receipts "
                          "ORDER BY seq"):
        if row["seq"] != expected_seq:
            return ChainReport(links, expected_seq, f"link #{expected_seq} is missing")
        reason = _link_fault(row, prev_hash)
        if not reason and sale_matches_order is not None and row["kind"] == "sale":
            reason = sale_matches_order(db, json.loads(row["body"]))
        if reason:
            return ChainReport(links, expected_seq, reason)
        links += 1
        expected_seq, prev_hash = expected_seq + 1, row["hash"]
    return ChainReport(links)


def _link_fault(row: sqlite3.Row, prev_hash: str) -> str:
    if row["prev_hash"] != prev_hash:
        return "does not point at the link before it"
    if chain_hash(prev_hash, row["body"]) != row["hash"]:
        return "its hash does not match its contents"
    try:
        entry = json.loads(row["body"])
    except ValueError:
        return "its contents are not JSON"
    if not isinstance(entry, dict) or (entry.get("seq"), entry.get("kind"),
                                       entry.get("order_id")) != (
            row["seq"], row["kind"], row["order_id"]):
        return "its contents name another link"
    return ""
