"""Allocations: what central stock each kit is given, published to the kit as its manifest, and
moves of units between kits during a drop (``dropkit hq allocate``; docs/mqtt.md,
"Allocations").

A kit's allocation is its whole manifest from HQ: every SKU allocated to it, at central stock's
name and price, numbered by ``seq`` and retained on ``<prefix>/<kit>/manifest``; the kit takes it
by the rule of a staff load (never below what it sold or holds) and answers on
``<prefix>/<kit>/manifest/answer`` (``applied`` or ``refused`` with the SKUs). A move of N units
of a SKU from kit A to kit B is checked against the ledger (A's allocation less what HQ knows A
sold; or central stock not allocated to any kit), then taken in two steps, so that no unit is
ever on offer at two kits: A's allocation is lowered first, and only once A has applied it is
B's raised. A refused step ends the move (``refused``, with the kit's reason) and the kit's
manifest is published again as it was.

:meth:`Allocations.step` moves the moves on; every HQ instance calls it (each step is one
transaction, holding the moves it changes), and publishes what it returns.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from typing import Any

from agent.core.clock import now_iso
from agent.hq.sql import Database, Row, Tx
from agent.uplink.session import MAX_PACKET_BYTES

log = logging.getLogger("dropkit.hq")

CENTRAL = ""
"""A move's ``from_kit`` or ``to_kit`` when the units come from, or go back to, central stock
that no kit is given."""
OPEN = ("pending", "releasing", "adding")
MAX_ANSWER_BYTES = 4096
PUBLISH_HEADER_BYTES = 16
"""What an MQTT PUBLISH of a manifest takes beside its topic and payload, at most: its fixed
header, the topic's length, the packet id and MQTT 5's properties' length."""


class Refused(ValueError):
    """A move the ledger does not allow; the message says why."""


def _where(kit: str) -> str:
    return f"kit {kit}" if kit else "central stock"


class Allocations:
    """The allocations in the ledger's database."""

    def __init__(self, db: Database, topic_prefix: str = "dropkit") -> None:
        self.db, self.topic_prefix = db, topic_prefix

    # -- asking for a move (the command) ------------------------------------------------------

    def request(self, from_kit: str, to_kit: str, sku: str, qty: int) -> int:
        """Record a move of ``qty`` units of ``sku``; its id. :class:`Refused` (recorded too)
        when the ledger does not allow it."""
        if qty < 1 or from_kit == to_kit:
            raise Refused("a move is of one unit or more, between two different places")
        with self.db.transaction() as tx:
            move_id = (tx.one("SELECT coalesce(max(id), 0) + 1 AS id FROM moves") or {})["id"]
            reason = self._check(tx, from_kit, sku, qty)
            tx.execute("INSERT INTO moves (id, from_kit, to_kit, sku, qty, state, reason, "
                       "requested_at, done_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (move_id, from_kit, to_kit, sku, qty, "refused" if reason else "pending",
                        reason, now_iso(), now_iso() if reason else ""))
        if reason:
            raise Refused(reason)
        return move_id

    def move(self, move_id: int) -> Row | None:
        with self.db.reading() as tx:
            return tx.one("SELECT * FROM moves WHERE id = ?", (move_id,))

    def _check(self, tx: Tx, from_kit: str, sku: str, qty: int) -> str:
        """Why the ledger does not allow the move ("" when it does)."""
        stock = tx.one("SELECT qty FROM stock WHERE sku = ?", (sku,))
        if stock is None:
            return f"{sku} is not in central stock"
        given = allocated(tx, sku)
        if from_kit == CENTRAL:
            free = stock["qty"] - sum(given.values())
            if free < qty:
                return f"{sku}: central stock has {free} not given to a kit, {qty} asked"
            return ""
        have = given.get(from_kit, 0)
        sold = sold_by(tx, from_kit).get(sku, 0)
        if have - sold < qty:
            return (f"{sku}: kit {from_kit} has {have} allocated and sold {sold} (by HQ's "
                    f"ledger), so {max(have - sold, 0)} can move, {qty} asked")
        return ""

    # -- the kits' answers and the steps (the HQ instances) -----------------------------------

    def answered(self, kit_id: str, payload: bytes) -> None:
        """A kit's answer to its manifest (from the broker); garbage is ignored."""
        try:
            if len(payload) > MAX_ANSWER_BYTES:
                raise ValueError(f"{len(payload)} bytes")
            answer = json.loads(payload)
            seq, result = int(answer["seq"]), answer["result"]
            if result not in ("applied", "refused"):
                raise ValueError(f"result {result!r}")
            conflict = answer.get("conflict") or {}
            detail = ", ".join(f"{sku} sold or held {n['taken']}, allocation {n['qty']}"
                               for sku, n in sorted(conflict.items())) if result == "refused" \
                else f"{answer.get('version')} {str(answer.get('hash'))[:12]}"
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            log.warning("ignored a manifest answer from kit %s (%s): %r", kit_id, exc,
                        payload[:100])
            return
        with self.db.transaction() as tx:
            changed = tx.execute(
                "UPDATE kit_manifests SET state = ?, detail = ?, answered_at = ? WHERE kit_id = ? "
                "AND seq = ? AND state = 'sent'", (result, detail, now_iso(), kit_id, seq)
            ).rowcount
        if changed:
            log.info("kit %s %s its manifest #%d%s", kit_id, result, seq,
                     f": {detail}" if result == "refused" else "")

    def step(self) -> list[tuple[str, str]]:
        """Move the open moves on, in order; ``(kit, payload)`` of the manifests to publish."""
        out: list[tuple[str, str]] = []
        while True:
            with self.db.transaction() as tx:
                move = tx.one("SELECT * FROM moves WHERE state IN ('pending', 'releasing', "
                              f"'adding') ORDER BY id LIMIT 1{self.db.for_update}")
                if move is None or not self._advance(tx, move, out):
                    return out

    def _advance(self, tx: Tx, move: Row, out: list[tuple[str, str]]) -> bool:
        """One step of ``move``; False while it waits for a kit."""
        sku, qty, state = move["sku"], move["qty"], move["state"]
        if state == "pending":
            reason = self._check(tx, move["from_kit"], sku, qty)
            if reason:
                return self._end(tx, move, "refused", reason)
            if move["from_kit"] == CENTRAL:
                return self._offer(tx, move, "adding", move["to_kit"], sku, +qty, out)
            return self._offer(tx, move, "releasing", move["from_kit"], sku, -qty, out)
        kit = move["from_kit"] if state == "releasing" else move["to_kit"]
        sent = tx.one("SELECT seq, state, detail FROM kit_manifests WHERE kit_id = ?", (kit,))
        if sent is None or sent["seq"] != move["seq"] or sent["state"] == "sent":
            return False  # the kit has not answered yet
        if sent["state"] == "refused":
            out.append((kit, self._publish(tx, kit, {})))  # as it was: the truth, retained
            back = " (its units went back to central stock)" if state == "adding" else ""
            return self._end(tx, move, "refused", f"kit {kit} refused: {sent['detail']}{back}")
        self._allocate(tx, kit, sku, -qty if state == "releasing" else +qty)
        if state == "releasing" and move["to_kit"] != CENTRAL:
            return self._offer(tx, move, "adding", move["to_kit"], sku, +qty, out)
        return self._end(tx, move, "done", "")

    def _offer(self, tx: Tx, move: Row, state: str, kit: str, sku: str, delta: int,
               out: list[tuple[str, str]]) -> bool:
        payload = self._manifest(tx, kit, {sku: delta})
        topic = f"{self.topic_prefix}/{kit}/manifest"
        if len(topic) + len(payload) + PUBLISH_HEADER_BYTES > MAX_PACKET_BYTES:
            # The broker would not send it to the kit (nor would the kit read it): the move
            # would wait for an answer for ever.
            items = len(manifest_of(payload)["items"])
            back = " (its units went back to central stock)" if \
                state == "adding" and move["from_kit"] != CENTRAL else ""
            return self._end(tx, move, "refused", (
                f"kit {kit}'s manifest would be {len(payload)} bytes with {items} items: a kit "
                f"takes a message of {MAX_PACKET_BYTES} bytes at most{back}"))
        self._sent(tx, kit, payload)
        seq = json.loads(payload)["seq"]
        tx.execute("UPDATE moves SET state = ?, seq = ? WHERE id = ?", (state, seq, move["id"]))
        out.append((kit, payload))
        log.info("move #%d (%d x %s, %s to %s): manifest #%d to kit %s", move["id"],
                 move["qty"], sku, _where(move["from_kit"]), _where(move["to_kit"]), seq, kit)
        return True

    @staticmethod
    def _end(tx: Tx, move: Row, state: str, reason: str) -> bool:
        tx.execute("UPDATE moves SET state = ?, reason = ?, done_at = ? WHERE id = ?",
                   (state, reason, now_iso(), move["id"]))
        (log.warning if reason else log.info)(
            "move #%d (%d x %s, %s to %s) %s%s", move["id"], move["qty"], move["sku"],
            _where(move["from_kit"]), _where(move["to_kit"]), state, f": {reason}" if reason
            else "")
        return True

    @staticmethod
    def _allocate(tx: Tx, kit: str, sku: str, delta: int) -> None:
        tx.execute("INSERT INTO allocations VALUES (?, ?, ?) ON CONFLICT (kit_id, sku) "
                   "DO UPDATE SET qty = allocations.qty + excluded.qty", (kit, sku, delta))

    @classmethod
    def _publish(cls, tx: Tx, kit: str, change: dict[str, int]) -> str:
        """The kit's next manifest (its allocations, ``change`` added), recorded as sent."""
        payload = cls._manifest(tx, kit, change)
        cls._sent(tx, kit, payload)
        return payload

    @staticmethod
    def _manifest(tx: Tx, kit: str, change: dict[str, int]) -> str:
        """The kit's next manifest: its allocations, ``change`` added, numbered after the last."""
        qty = Counter({r["sku"]: r["qty"] for r in tx.all(
            "SELECT sku, qty FROM allocations WHERE kit_id = ?", (kit,))})
        qty.update(change)
        items = [{"sku": r["sku"], "name": r["name"] or r["sku"],
                  "price_cents": r["price_cents"], "qty": qty[r["sku"]]}
                 for r in tx.all("SELECT sku, name, price_cents FROM stock ORDER BY sku")
                 if r["sku"] in qty]
        last = tx.one("SELECT seq FROM kit_manifests WHERE kit_id = ?", (kit,))
        seq = (last["seq"] if last else 0) + 1
        return json.dumps({"seq": seq, "manifest": {"version": f"hq-{seq}", "items": items}},
                          separators=(",", ":"))

    @staticmethod
    def _sent(tx: Tx, kit: str, payload: str) -> None:
        seq = json.loads(payload)["seq"]
        tx.execute("INSERT INTO kit_manifests (kit_id, seq, payload, state, sent_at) VALUES "
                   "(?, ?, ?, 'sent', ?) ON CONFLICT (kit_id) DO UPDATE SET seq = excluded.seq, "
                   "payload = excluded.payload, state = 'sent', detail = '', "
                   "sent_at = excluded.sent_at, answered_at = ''", (kit, seq, payload, now_iso()))

    def published(self) -> list[tuple[str, str]]:
        """Every kit's latest manifest: published again at each connection (a broker that
        restarted without its persistence forgot the retained ones)."""
        with self.db.reading() as tx:
            return [(r["kit_id"], r["payload"]) for r in tx.all(
                "SELECT kit_id, payload FROM kit_manifests ORDER BY kit_id")]


def allocated(tx: Tx, sku: str) -> dict[str, int]:
    """Each kit's allocation of ``sku``."""
    return {r["kit_id"]: r["qty"] for r in tx.all(
        "SELECT kit_id, qty FROM allocations WHERE sku = ? AND qty != 0", (sku,))}


def sold_by(tx: Tx, kit_id: str) -> Counter[str]:
    """What HQ's ledger has ``kit_id`` selling, per SKU: its accepted sales less the voided."""
    sold: Counter[str] = Counter()
    for r in tx.all("SELECT lines FROM sales s WHERE kit_id = ? AND result = 'accepted' AND NOT "
                    "EXISTS (SELECT 1 FROM links l WHERE l.kit_id = s.kit_id AND "
                    "l.order_id = s.order_id AND l.type = 'void')", (kit_id,)):
        for line in json.loads(r["lines"]):
            sold[line["sku"]] += int(line["qty"])
    return sold


def manifest_of(payload: str) -> dict[str, Any]:
    """The manifest in a published payload."""
    return json.loads(payload)["manifest"]
