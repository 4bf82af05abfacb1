"""One ``orders`` message as HQ takes it (:func:`parse`), and the check of its receipt link
(:func:`link_fault`) by the rule of :mod:`agent.core.receipts`:
``hash = SHA-256(previous hash + body)``, the body naming this link, the message saying what its
body signed.

    >>> from agent.core.receipts import canonical_json, chain_hash
    >>> sale_1 = "a" * 64  # the hash of the kit's link #1
    >>> body = canonical_json({"kind": "void", "order_id": "order-0001", "seq": 2,
    ...                        "voids_seq": 1})
    >>> link = parse("kit-a", {"type": "void", "order_id": "order-0001", "voids_seq": 1,
    ...     "receipt": {"seq": 2, "hash": chain_hash(sale_1, body), "prev": sale_1,
    ...                 "body": body}})
    >>> link_fault(link, sale_1)
    ''
    >>> link_fault(link, "b" * 64)
    'does not chain to the link before it as HQ holds it (the chain was forked or rewritten)'
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from agent.core.receipts import GENESIS_HASH, chain_hash

KINDS = ("sale", "void", "refund")
MAX_INT = 2**53  # what every JSON reader and both databases hold exactly
MAX_LINES = 1000
MAX_BODY = 64 * 1024
SIGNED = {"sale": ("total_cents", "created_at"), "void": ("voids_seq", "created_at"),
          "refund": ("refunds_seq", "restock", "total_cents", "created_at")}
"""The fields of each kind's message that must say what its signed body says (and lines)."""


@dataclass(frozen=True)
class Link:
    """A sale, void or refund from a kit, with its own receipt link."""

    kit_id: str
    kind: str
    order_id: str
    seq: int
    hash: str
    message: dict[str, Any]

    @property
    def body(self) -> str | None:
        """What the link was hashed from, if the kit sent it (kits before 0.2 did not)."""
        return self.message["receipt"].get("body")

    @functools.cached_property
    def own_faults(self) -> tuple[str, str] | None:
        """What is wrong with the link by itself: its hash over what it says it was hashed
        from, and its contents (each '' when right); None for an old kit's link, which has
        nothing to check it by. Computed once (HQ's intake asks before the ledger's
        transaction, so no lock is held while it hashes)."""
        receipt = self.message["receipt"]
        body, claimed_prev = receipt.get("body"), receipt.get("prev")
        if body is None or claimed_prev is None:
            return None
        if chain_hash(claimed_prev, body) != self.hash:
            return "its hash does not match its contents", ""
        return "", _contents_fault(self, body)


def _int(value: Any, name: str, least: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= MAX_INT:
        raise ValueError(f"{name} must be a whole number from {least}")
    return value


def parse(kit_id: str, message: Any) -> Link:
    """The message as a :class:`Link`; ValueError says what is wrong with it."""
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    if not 0 < len(kit_id) <= 64:
        raise ValueError("no kit id in the topic")
    kind, order_id, receipt = message.get("type"), message.get("order_id"), message.get("receipt")
    if kind not in KINDS:
        raise ValueError("type must be sale, void or refund")
    if not isinstance(order_id, str) or not 0 < len(order_id) <= 64:
        raise ValueError("order_id missing or not a string")
    if not isinstance(receipt, dict):
        raise ValueError("no receipt")
    seq = _int(receipt.get("seq"), "receipt.seq", 1)
    link_hash = receipt.get("hash", "")
    if not isinstance(link_hash, str) or len(link_hash) > 128:
        raise ValueError("receipt.hash must be a string")
    for name, limit in (("prev", 128), ("body", MAX_BODY)):
        if name in receipt and (not isinstance(receipt[name], str) or len(receipt[name]) > limit):
            raise ValueError(f"receipt.{name} must be a string of at most {limit} characters")
    if kind == "sale":
        lines = message.get("lines") or []
        if not isinstance(lines, list) or len(lines) > MAX_LINES or not all(
                isinstance(line, dict) and isinstance(line.get("sku"), str) for line in lines):
            raise ValueError(f"lines must be a list of at most {MAX_LINES} lines with a sku")
        for line in lines:
            _int(line.get("qty"), "a line's qty", 1)
        _int(message.get("total_cents", 0), "total_cents")
    return Link(kit_id, kind, order_id, seq, link_hash, message)


def link_fault(link: Link, prev_hash: str | None) -> str:
    """Why ``link`` is not the kit's next link after ``prev_hash``, or ''.

    ``prev_hash`` is the hash of the link before it as HQ holds it, or None when HQ does not
    hold it (a gap it went on without): then the link is checked on its own.
    """
    if link.seq == 1:
        prev_hash = GENESIS_HASH
    faults = link.own_faults
    if faults is None:
        return ""  # an old kit's message: nothing to check it by (counted as unverified)
    hash_fault, contents_fault = faults
    if hash_fault:
        return hash_fault
    if prev_hash and link.message["receipt"]["prev"] != prev_hash:
        return ("does not chain to the link before it as HQ holds it (the chain was forked or "
                "rewritten)")
    return contents_fault


def _contents_fault(link: Link, body: str) -> str:
    """Whether the signed body names this link and says what the message says."""
    try:
        signed = json.loads(body)
    except ValueError:
        return "its contents are not JSON"
    if not isinstance(signed, dict) or (signed.get("kind"), signed.get("order_id"),
                                        signed.get("seq"), signed.get("kit_id", link.kit_id)
                                        ) != (link.kind, link.order_id, link.seq, link.kit_id):
        return "its contents name another link"
    fields = [name for name in SIGNED[link.kind] if link.message.get(name) != signed.get(name)]
    if link.kind == "sale" and _sold(link.message.get("lines")) != _sold(signed.get("lines")):
        fields.append("lines")
    return f"the message's {', '.join(fields)} differ from what it signed" if fields else ""


def _sold(lines: Any) -> list[tuple[Any, Any, Any]]:
    return [(line.get("sku"), line.get("qty"), line.get("price_cents"))
            for line in lines or [] if isinstance(line, dict)]
