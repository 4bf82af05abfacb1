"""HQ's central ledger: the reconciliation rule (:meth:`Ledger.record_many`) and the report of
what needs a person (``dropkit hq report``), on SQLite or PostgreSQL (:mod:`agent.hq.sql`).

Each message from a kit is recorded once (repeats are dropped by kit and receipt link, and
answered again), each kit's messages are applied in receipt-chain order (one that arrives ahead
of a missing link waits for it, up to ``hold_s``), each link is checked against the one before
it (:func:`agent.hq.links.link_fault`: a broken or forked link is refused), each sale is checked
against central stock, and voids and refunds with restock put the stock back.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.core.clock import now_iso
from agent.core.manifest import Manifest
from agent.hq.links import Link, link_fault, parse
from agent.hq.sql import Row, Tx, open_database

log = logging.getLogger("dropkit.hq")

HOLD_S = 5.0
Ack = dict[str, Any]


def sold_at(sale: Row) -> str:
    """A sale's time as its kit's clock told it, marked when that clock was not set."""
    when = sale["sold_at"] or "at an unknown time"
    return when if sale["clock_synced"] else f"{when} by the kit's clock, which was not set"


class Ledger:
    """The central ledger; :meth:`record_many` is the whole reconciliation rule.

    Each kit's messages are applied in receipt-chain order, so central stock is decided the
    way the kit sold: one that arrives ahead of a missing link is held (durably) until the link
    comes, or for ``hold_s`` seconds, after which the gap is skipped and reported.

    Several processes may share one ledger: every batch is one transaction that holds the chain
    rows of its kits (PostgreSQL; a SQLite file is held whole), the held messages are in the
    ledger and stamped with the wall clock, so the instance that applies a missing link applies
    the messages another instance held behind it, in the same transaction.
    """

    def __init__(self, target: str | Path, hold_s: float = HOLD_S) -> None:
        self.db = open_database(target)
        self.hold_s = hold_s

    def close(self) -> None:
        self.db.close()

    def load_stock(self, manifest: Manifest) -> None:
        """Central stock per SKU: the manifest's ``qty`` is what all kits may sell together."""
        with self.db.transaction() as tx:
            for item in manifest.items:
                tx.execute("INSERT INTO stock (sku, qty) VALUES (?, ?) ON CONFLICT (sku) "
                           "DO UPDATE SET qty = excluded.qty", (item.sku, item.qty))

    def record(self, kit_id: str, message: dict[str, Any],
               now: float | None = None) -> list[Ack]:
        """Take one message from a kit; returns the acks to send (none while it is held).
        ValueError for a message that is not a sale, void or refund with a receipt link."""
        return [ack for _, ack in self.record_many([parse(kit_id, message)], now)]

    def record_many(self, links: Sequence[Link],
                    now: float | None = None) -> list[tuple[str, Ack]]:
        """Take a batch of messages in one transaction; ``(kit, ack)`` to send after it."""
        now = time.time() if now is None else now
        with self.db.transaction() as tx:
            tx.lock_chains([link.kit_id for link in links])
            return [(link.kit_id, ack) for link in links for ack in self._record(tx, link, now)]

    def release_overdue(self, now: float | None = None) -> list[tuple[str, Ack]]:
        """Skip the gap before messages held longer than ``hold_s``; ``(kit, ack)`` to send."""
        cutoff = (time.time() if now is None else now) - self.hold_s
        with self.db.reading() as tx:  # the write lock only when there is something to release
            kits = [r["kit_id"] for r in tx.all("SELECT DISTINCT kit_id FROM held "
                                                "WHERE held_at <= ?", (cutoff,))]
        released: list[tuple[str, Ack]] = []
        for kit_id in kits:
            with self.db.transaction() as tx:
                tx.lock_chains([kit_id])
                first = tx.one("SELECT min(seq) AS seq, min(held_at) AS at FROM held "
                               "WHERE kit_id = ?", (kit_id,))
                if first["seq"] is None or first["at"] > cutoff:
                    continue  # another instance applied or released them meanwhile
                log.warning("kit %s: receipt links #%d to #%d never came; going on without them",
                            kit_id, self._chain(tx, kit_id)[0], first["seq"] - 1)
                released += [(kit_id, ack) for ack in self._apply_held(tx, kit_id, first["seq"],
                                                                       None)]
        return released

    def _record(self, tx: Tx, link: Link, now: float) -> list[Ack]:
        held = tx.one("SELECT hash FROM links WHERE kit_id = ? AND seq = ?",
                      (link.kit_id, link.seq))
        if held is not None:
            if held["hash"] != link.hash:
                return self._fault(tx, link, f"receipt #{link.seq} forks the chain: HQ holds "
                                             f"another link #{link.seq} from this kit")
            self._count(tx, "duplicates")
            return [self._sale(tx, link, "")] if link.kind == "sale" else []
        next_seq, head = self._chain(tx, link.kit_id)
        if link.seq > next_seq:
            tx.execute("INSERT INTO held VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       (link.kit_id, link.seq, json.dumps(link.message), now))
            return []
        if link.seq < next_seq:  # late, after HQ went on without it: checked on its own
            return self._apply(tx, link, None, advance=False)
        acks = self._apply(tx, link, head or None)
        return acks + self._apply_held(tx, link.kit_id, link.seq + 1, link.hash)

    def _chain(self, tx: Tx, kit_id: str) -> tuple[int, str]:
        """The kit's next expected seq and the hash of the link before it ('' if unknown)."""
        row = tx.one("SELECT next_seq, head_hash FROM chains WHERE kit_id = ?", (kit_id,))
        return (row["next_seq"], row["head_hash"]) if row else (1, "")

    def _apply_held(self, tx: Tx, kit_id: str, seq: int, prev_hash: str | None) -> list[Ack]:
        """Apply held messages from ``seq`` on while the chain has no gap."""
        acks = []
        while row := tx.one("SELECT message FROM held WHERE kit_id = ? AND seq = ?",
                            (kit_id, seq)):
            tx.execute("DELETE FROM held WHERE kit_id = ? AND seq = ?", (kit_id, seq))
            link = parse(kit_id, json.loads(row["message"]))
            acks += self._apply(tx, link, prev_hash)
            seq, prev_hash = seq + 1, link.hash
        return acks

    def _apply(self, tx: Tx, link: Link, prev_hash: str | None, advance: bool = True
               ) -> list[Ack]:
        """Take the link into the kit's chain (``prev_hash``: the link before it, if HQ holds
        it; ``advance``: it is the chain's next) and apply what it says, unless it is broken."""
        fault = link_fault(link, prev_hash)
        tx.execute("INSERT INTO links (kit_id, seq, type, order_id, hash, received_at, fault, "
                   "verified) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (link.kit_id, link.seq, link.kind, link.order_id, link.hash, now_iso(),
                    fault, int(link.body is not None)))
        if advance:
            # The kit's later links chain to this one, even a broken one: HQ goes on from it.
            tx.execute("INSERT INTO chains (kit_id, next_seq, head_hash) VALUES (?, ?, ?) "
                       "ON CONFLICT (kit_id) DO UPDATE SET next_seq = excluded.next_seq, "
                       "head_hash = excluded.head_hash", (link.kit_id, link.seq + 1, link.hash))
        if fault:
            return self._fault(tx, link, f"receipt #{link.seq} {fault}")
        if link.kind == "sale":
            return [self._sale(tx, link, "")]
        self._undo(tx, link)
        return []

    def _fault(self, tx: Tx, link: Link, reason: str) -> list[Ack]:
        """A broken or forked link: kept for the report, its sale refused, nothing applied."""
        if tx.execute("INSERT INTO faults (kit_id, seq, hash, type, order_id, reason, "
                      "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                      (link.kit_id, link.seq, link.hash, link.kind, link.order_id, reason,
                       now_iso())).rowcount:
            log.warning("kit %s %s %s: %s", link.kit_id, link.kind, link.order_id, reason)
        if link.kind != "sale":
            return []
        ack = self._sale(tx, link, reason)
        return [{**ack, "result": "rejected", "reason": reason}]

    def _count(self, tx: Tx, name: str) -> None:
        tx.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT (name) "
                   "DO UPDATE SET value = counters.value + 1", (name,))

    def _sale(self, tx: Tx, link: Link, refused: str) -> Ack:
        """The sale's answer: recorded the first time (checked against central stock, or
        ``refused`` for that reason), the same answer every time after."""
        message = link.message
        row = tx.one("SELECT result, reason, trace_id FROM sales WHERE kit_id = ? "
                     "AND order_id = ?", (link.kit_id, link.order_id))
        if row is None:
            lines = message.get("lines") or []
            result, reason = ("rejected", refused) if refused else self._check_stock(tx, lines)
            row = {"result": result, "reason": reason, "trace_id": str(message.get("trace_id",
                                                                                   ""))}
            tx.execute(
                "INSERT INTO sales (kit_id, order_id, seq, total_cents, lines, result, reason, "
                "trace_id, received_at, sold_at, clock_synced) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (link.kit_id, link.order_id, link.seq, int(message.get("total_cents", 0)),
                 json.dumps(lines), result, reason, row["trace_id"], now_iso(),
                 str(message.get("created_at", "")), int(message.get("clock_synced") is not False)))
            log.info("kit %s order %s %s%s trace %s", link.kit_id, link.order_id, result,
                     f" ({reason})" if reason else "", row["trace_id"] or "-")
        return {"order_id": link.order_id, "result": row["result"], "reason": row["reason"],
                "trace_id": row["trace_id"]}

    def _check_stock(self, tx: Tx, lines: list[Any]) -> tuple[str, str]:
        # Every stock row, in SKU order, locked until the commit: two instances deciding
        # sales never both sell the last unit, and never wait for each other in a circle.
        left = {r["sku"]: r["left"] for r in tx.all(
            f"SELECT sku, qty - sold AS left FROM stock ORDER BY sku{self.db.for_update}")}
        if not left:
            return "accepted", ""  # no central stock loaded: HQ only keeps the books
        for line in lines:
            sku, qty = line["sku"], line["qty"]
            if sku not in left:
                return "rejected", f"{sku} is not in central stock"
            if left[sku] < qty:
                return "rejected", f"{sku}: central stock has {left[sku]} left, {qty} sold"
            left[sku] -= qty
        for line in lines:
            tx.execute("UPDATE stock SET sold = sold + ? WHERE sku = ?",
                       (line["qty"], line["sku"]))
        return "accepted", ""

    def _undo(self, tx: Tx, link: Link) -> None:
        sale = tx.one("SELECT lines, result FROM sales WHERE kit_id = ? AND order_id = ?",
                      (link.kit_id, link.order_id))
        if sale is None or sale["result"] != "accepted" or (
                link.kind == "refund" and not link.message.get("restock")):
            return
        for line in sorted(json.loads(sale["lines"]), key=lambda line: line["sku"]):
            tx.execute("UPDATE stock SET sold = sold - ? WHERE sku = ?",
                       (line["qty"], line["sku"]))

    def report(self) -> list[str]:
        """What needs a person, one line each."""
        with self.db.reading() as tx:
            return self._report(tx)

    def _report(self, tx: Tx) -> list[str]:
        lines = [f"chain: kit {r['kit_id']} {r['type']} {r['order_id']}: {r['reason']}"
                 for r in tx.all("SELECT * FROM faults ORDER BY kit_id, seq, received_at")]
        lines += [f"rejected: kit {r['kit_id']} order {r['order_id']} (receipt #{r['seq']}, "
                  f"sold {sold_at(r)}): {r['reason']}" for r in tx.all(
                      "SELECT * FROM sales WHERE result = 'rejected' ORDER BY received_at, seq")]
        for r in tx.all("SELECT kit_id, min(seq) AS first, count(*) AS n FROM held "
                        "GROUP BY kit_id ORDER BY kit_id"):
            lines.append(f"held: kit {r['kit_id']} has {r['n']} message(s) from receipt "
                         f"#{r['first']} on waiting for #{self._chain(tx, r['kit_id'])[0]}")
        for kit in tx.all("SELECT kit_id, max(seq) AS top, count(*) AS n, "
                          "sum(verified) AS verified FROM links GROUP BY kit_id ORDER BY kit_id"):
            if kit["n"] != kit["top"]:
                have = {r["seq"] for r in tx.all("SELECT seq FROM links WHERE kit_id = ?",
                                                 (kit["kit_id"],))}
                missing = [seq for seq in range(1, kit["top"] + 1) if seq not in have]
                shown = ", ".join(f"#{seq}" for seq in missing[:20])
                lines.append(f"gap: kit {kit['kit_id']} receipt chain misses {len(missing)} "
                             f"link(s): {shown}{' ...' if len(missing) > 20 else ''}")
            if kit["verified"] != kit["n"]:
                lines.append(f"unverified: kit {kit['kit_id']} sent {kit['n'] - kit['verified']}"
                             f" receipt link(s) without what they were hashed from (a kit "
                             f"older than HQ's check)")
        return lines
