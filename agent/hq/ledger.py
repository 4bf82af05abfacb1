"""HQ's central ledger: the reconciliation rule (:meth:`Ledger.record_many`) and the report of
what needs a person (``dropkit hq report``), on SQLite or PostgreSQL (:mod:`agent.hq.sql`).

Each message from a kit is recorded once (repeats are dropped by kit and receipt link, and
answered again, with the sales their first arrival applied from ``held``), each kit's messages
are applied in receipt-chain order (one that arrives ahead of a missing link waits for it, up to
``hold_s``), each link is checked against the one before it
(:func:`agent.hq.links.link_fault`: a broken or forked link is refused), each sale is checked
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
from agent.hq.batch import Batch, StockMoved
from agent.hq.links import Link, link_fault, parse
from agent.hq.sql import Row, Tx, open_database

log = logging.getLogger("dropkit.hq")

HOLD_S = 5.0
Ack = dict[str, Any]
Effect = tuple[str, Link, str]
"""What a link does once its sales are decided: ``("sale" | "answer" | "refuse" | "undo", link,
why refused)``."""


def sold_at(sale: Row) -> str:
    """A sale's time as its kit's clock told it, marked when that clock was not set."""
    when = sale["sold_at"] or "at an unknown time"
    return when if sale["clock_synced"] else f"{when} by the kit's clock, which was not set"


def sale_ack(sale: Row) -> Ack:
    """A recorded sale's ack."""
    return {"order_id": sale["order_id"], "result": sale["result"], "reason": sale["reason"],
            "trace_id": sale["trace_id"]}


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
        self.held = 0  # messages this process held for a missing link (HQ's stop says it)

    def close(self) -> None:
        self.db.close()

    def load_stock(self, manifest: Manifest) -> None:
        """Central stock per SKU: the manifest's ``qty`` is what all kits may sell together."""
        with self.db.transaction() as tx:
            for item in manifest.items:
                tx.execute("INSERT INTO stock (sku, qty, name, price_cents) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT (sku) DO UPDATE SET qty = excluded.qty, "
                           "name = excluded.name, price_cents = excluded.price_cents",
                           (item.sku, item.qty, item.name, item.price_cents))

    def record(self, kit_id: str, message: dict[str, Any],
               now: float | None = None) -> list[Ack]:
        """Take one message from a kit; returns the acks to send (none while it is held).
        ValueError for a message that is not a sale, void or refund with a receipt link."""
        return [ack for _, ack in self.record_many([parse(kit_id, message)], now)]

    def record_many(self, links: Sequence[Link],
                    now: float | None = None) -> list[tuple[str, Ack]]:
        """Take a batch of messages in one transaction; ``(kit, ack)`` to send after it."""
        now = time.time() if now is None else now
        try:
            return self._record_many(links, now, lock_stock=False)
        except StockMoved:
            return self._record_many(links, now, lock_stock=True)

    def _record_many(self, links: Sequence[Link], now: float,
                     lock_stock: bool) -> list[tuple[str, Ack]]:
        with self.db.transaction() as tx:
            batch = Batch(tx, self.db.for_update, [link.kit_id for link in links],
                          [(link.kit_id, link.seq) for link in links], lock_stock)
            effects: list[Effect] = []
            for link in links:
                self._record(batch, link, now, effects)
            acks = self._decide(batch, effects)
            batch.flush()
        self.held += batch.newly_held
        batch.say()  # after the commit: no lock is held while the lines are written
        return acks

    def release_overdue(self, now: float | None = None) -> list[tuple[str, Ack]]:
        """Skip the gap before messages held longer than ``hold_s``; ``(kit, ack)`` to send."""
        cutoff = (time.time() if now is None else now) - self.hold_s
        with self.db.reading() as tx:  # the write lock only when there is something to release
            kits = [r["kit_id"] for r in tx.all("SELECT DISTINCT kit_id FROM held "
                                                "WHERE held_at <= ?", (cutoff,))]
        released: list[tuple[str, Ack]] = []
        for kit_id in kits:
            with self.db.transaction() as tx:
                batch = Batch(tx, self.db.for_update, [kit_id], [], lock_stock=True)
                first = batch.first_held(kit_id)
                if first is None or first[1] > cutoff:
                    continue  # another instance applied or released them meanwhile
                log.warning("kit %s: receipt links #%d to #%d never came; going on without them",
                            kit_id, batch.chain(kit_id)[0], first[0] - 1)
                effects: list[Effect] = []
                self._apply_held(batch, kit_id, first[0], None, effects)
                released += self._decide(batch, effects)
                batch.flush()
            batch.say()
        return released

    def _record(self, batch: Batch, link: Link, now: float, effects: list[Effect]) -> None:
        held = batch.link_hash(link.kit_id, link.seq)
        if held is not None:
            if held != link.hash:
                self._fault(batch, link, f"receipt #{link.seq} forks the chain: HQ holds "
                                         f"another link #{link.seq} from this kit", effects)
                return
            batch.counts["duplicates"] += 1
            if link.kind == "sale":
                effects.append(("answer", link, ""))
            batch.repeated(link.kit_id, link.seq)
            return
        next_seq, head = batch.chain(link.kit_id)
        if link.seq > next_seq:
            batch.hold(link.kit_id, link.seq, link.message, now)
        elif link.seq < next_seq:  # late, after HQ went on without it: checked on its own
            self._apply(batch, link, None, effects, advance=False)
        else:
            self._apply(batch, link, head or None, effects)
            last = self._apply_held(batch, link.kit_id, link.seq + 1, link.hash, effects)
            batch.released(link.kit_id, link.seq, last)

    def _apply_held(self, batch: Batch, kit_id: str, seq: int, prev_hash: str | None,
                    effects: list[Effect]) -> int:
        """Apply held messages from ``seq`` on while the chain has no gap; the last seq
        applied (``seq - 1``: none)."""
        while (message := batch.take_held(kit_id, seq)) is not None:
            link = parse(kit_id, message)
            self._apply(batch, link, prev_hash, effects)
            seq, prev_hash = seq + 1, link.hash
        return seq - 1

    def _apply(self, batch: Batch, link: Link, prev_hash: str | None, effects: list[Effect],
               advance: bool = True) -> None:
        """Take the link into the kit's chain (``prev_hash``: the link before it, if HQ holds
        it; ``advance``: it is the chain's next) and apply what it says, unless it is broken."""
        fault = link_fault(link, prev_hash)
        batch.add_link(link.kit_id, link.seq, link.kind, link.order_id, link.hash, fault,
                       link.body is not None)
        if advance:  # the kit's later links chain to this one, even a broken one
            batch.advance(link.kit_id, link.seq, link.hash)
        if fault:
            self._fault(batch, link, f"receipt #{link.seq} {fault}", effects)
        else:
            effects.append(("sale" if link.kind == "sale" else "undo", link, ""))

    def _fault(self, batch: Batch, link: Link, reason: str, effects: list[Effect]) -> None:
        """A broken or forked link: kept for the report, its sale refused, nothing applied."""
        batch.add_fault(link.kit_id, link.seq, link.hash, link.kind, link.order_id, reason)
        log.warning("kit %s %s %s: %s", link.kit_id, link.kind, link.order_id, reason)
        if link.kind == "sale":
            effects.append(("refuse", link, reason))

    def _decide(self, batch: Batch, effects: list[Effect]) -> list[tuple[str, Ack]]:
        """Decide the batch's sales in chain order (against central stock, locked only now),
        undo the voided and refunded ones; the acks, then those of the sales that repeated
        links had released (answered again as recorded)."""
        again = batch.released_sales()
        batch.load_sales([(link.kit_id, link.order_id) for _, link, _ in effects] + again)
        acks = []
        for what, link, refused in effects:
            if what == "undo":
                self._undo(batch, link)
                continue
            row = batch.sale(link.kit_id, link.order_id)
            if row is None:
                row = self._new_sale(batch, link, refused)
            acks.append((link.kit_id, {**sale_ack(row), "result": "rejected", "reason": refused}
                         if refused else sale_ack(row)))
        acks += [(kit_id, sale_ack(row)) for kit_id, order_id in again
                 if (row := batch.sale(kit_id, order_id)) is not None]
        return acks

    def _new_sale(self, batch: Batch, link: Link, refused: str) -> Row:
        message = link.message
        lines = message.get("lines") or []
        result, reason = ("rejected", refused) if refused else self._check_stock(batch, lines)
        row = {"kit_id": link.kit_id, "order_id": link.order_id, "seq": link.seq,
               "total_cents": int(message.get("total_cents", 0)), "lines": json.dumps(lines),
               "result": result, "reason": reason, "trace_id": str(message.get("trace_id", "")),
               "received_at": now_iso(), "sold_at": str(message.get("created_at", "")),
               "clock_synced": int(message.get("clock_synced") is not False)}
        batch.add_sale(row)
        batch.said.append(("kit %s order %s %s%s trace %s", link.kit_id, link.order_id, result,
                           f" ({reason})" if reason else "", row["trace_id"] or "-"))
        return row

    @staticmethod
    def _check_stock(batch: Batch, lines: list[Any]) -> tuple[str, str]:
        left = batch.stock_left()
        if not left:
            return "accepted", ""  # no central stock loaded: HQ only keeps the books
        wanted: dict[str, int] = {}
        for line in lines:
            sku = line["sku"]
            if sku not in left:
                return "rejected", f"{sku} is not in central stock"
            wanted[sku] = wanted.get(sku, 0) + line["qty"]
            batch.checked(sku, left[sku] - wanted[sku])
            if left[sku] < wanted[sku]:
                return "rejected", f"{sku}: central stock has {left[sku]} left, {line['qty']} sold"
        for sku, qty in wanted.items():
            batch.sell(sku, qty)
        return "accepted", ""

    @staticmethod
    def _undo(batch: Batch, link: Link) -> None:
        sale = batch.sale(link.kit_id, link.order_id)
        if sale is None or sale["result"] != "accepted" or (
                link.kind == "refund" and not link.message.get("restock")):
            return
        left = batch.stock_left()
        for line in json.loads(sale["lines"]):
            if line["sku"] in left:
                batch.sell(line["sku"], -line["qty"])

    def gauges(self) -> dict[str, Any]:
        """The ledger's side of ``/metrics`` (all instances'): per kit the messages held, the
        links missing and the chain faults; the duplicates answered again."""
        with self.db.reading() as tx:
            per_kit = {
                "held": tx.all("SELECT kit_id, count(*) AS n FROM held GROUP BY kit_id "
                               "ORDER BY kit_id"),
                "missing": tx.all("SELECT kit_id, max(seq) - count(*) AS n FROM links GROUP BY "
                                  "kit_id HAVING max(seq) > count(*) ORDER BY kit_id"),
                "faults": tx.all("SELECT kit_id, count(*) AS n FROM faults GROUP BY kit_id "
                                 "ORDER BY kit_id")}
            duplicates = tx.one("SELECT value FROM counters WHERE name = 'duplicates'")
        return {**{name: [(r["kit_id"], r["n"]) for r in rows] for name, rows in per_kit.items()},
                "duplicates": duplicates["value"] if duplicates else 0}

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
        for r in tx.all("SELECT h.kit_id, min(h.seq) AS first, count(*) AS n, "
                        "min(c.next_seq) AS next_seq FROM held h LEFT JOIN chains c "
                        "ON c.kit_id = h.kit_id GROUP BY h.kit_id ORDER BY h.kit_id"):
            lines.append(f"held: kit {r['kit_id']} has {r['n']} message(s) from receipt "
                         f"#{r['first']} on waiting for #{r['next_seq'] or 1}")
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
