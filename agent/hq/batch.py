"""One ledger transaction's view of the ledger (:class:`Batch`): what a batch of messages needs
is read in a few queries (its kits' chains, locked; the links, held messages and sales they
touch; central stock), changed in memory by the rules in :mod:`agent.hq.ledger`, and written
back in a few ``executemany`` at the end. So a batch of hundreds of messages costs a dozen round
trips to PostgreSQL, not a dozen per message.

Correct because the batch holds its kits' chains until it commits: nothing it read of those kits
can change under it. Central stock is shared by every kit, so every instance's batches would
wait for each other if each locked it from its first sale to its commit: on PostgreSQL a batch
decides its sales against stock read without a lock, and only at the end locks the stock rows
and checks that every decision stands with what they hold now (:meth:`Batch.flush`; each check
of a sale is kept as its margin, the units left after it). If one would not, :class:`StockMoved`
rolls the batch back and it is decided again with the stock locked from the start.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

from agent.core.clock import now_iso
from agent.hq.sql import Row, Tx

log = logging.getLogger("dropkit.hq")


class StockMoved(Exception):
    """Central stock changed under the batch so that one of its sales would be decided
    otherwise (it is decided again, with the stock locked)."""


class Batch:
    """The state of the batch's kits, read once and written back by :meth:`flush`.

    ``lock_stock``: lock the stock rows when first read (else only at the end, on PostgreSQL).
    """

    def __init__(self, tx: Tx, for_update: str, kits: Iterable[str],
                 links: Iterable[tuple[str, int]], lock_stock: bool = False) -> None:
        self.tx, self.for_update = tx, for_update
        self.lock_stock = lock_stock or not for_update  # SQLite: the file is held whole
        self.kits = sorted(set(kits))
        tx.lock_chains(self.kits)
        kit_keys = [(kit,) for kit in self.kits]
        self.chains: dict[str, tuple[int, str]] = {
            r["kit_id"]: (r["next_seq"], r["head_hash"]) for r in tx.select_keys(
                "kit_id, next_seq, head_hash", "chains", kit_keys, ("kit_id",), ("text",))}
        self.held: dict[tuple[str, int], tuple[str, float]] = {
            (r["kit_id"], r["seq"]): (r["message"], r["held_at"]) for r in tx.select_keys(
                "kit_id, seq, message, held_at", "held", kit_keys, ("kit_id",), ("text",))}
        self.links: dict[tuple[str, int], str] = {}
        # Of the links in the ledger before this batch: the last held link each one's arrival
        # applied after it (only those that applied any).
        self._released_before: dict[tuple[str, int], int] = {}
        for r in tx.select_keys("kit_id, seq, hash, released_to", "links", sorted(set(links)),
                                ("kit_id", "seq"), ("text", "bigint")):
            self.links[r["kit_id"], r["seq"]] = r["hash"]
            if r["released_to"]:
                self._released_before[r["kit_id"], r["seq"]] = r["released_to"]
        self.sales: dict[tuple[str, str], Row] = {}
        self.stock: dict[str, int] | None = None
        self._stock_read: dict[str, int] = {}
        self._margins: dict[str, tuple[float, float]] = {}  # per SKU: least passed, most failed
        self._chains_changed: set[str] = set()
        self._new_links: list[tuple[Any, ...]] = []
        self._released: dict[tuple[str, int], int] = {}  # as _released_before, for new links
        self._repeated: list[tuple[str, int]] = []  # links in it again (:meth:`repeated`)
        self._unheld: list[tuple[str, int]] = []
        self._new_held: list[tuple[str, int, str, float]] = []
        self._faults: list[tuple[Any, ...]] = []
        self._new_sales: list[tuple[Any, ...]] = []
        self._sold: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.newly_held = 0  # messages this batch left held in the ledger (known at flush)
        self.said: list[tuple[Any, ...]] = []  # log lines (format, args) for after the commit

    # The chains: each kit's next seq and the hash before it.
    def chain(self, kit_id: str) -> tuple[int, str]:
        return self.chains.get(kit_id, (1, ""))

    def advance(self, kit_id: str, seq: int, link_hash: str) -> None:
        self.chains[kit_id] = (seq + 1, link_hash)
        self._chains_changed.add(kit_id)

    def link_hash(self, kit_id: str, seq: int) -> str | None:
        return self.links.get((kit_id, seq))

    def add_link(self, kit_id: str, seq: int, kind: str, order_id: str, link_hash: str,
                 fault: str, verified: bool) -> None:
        self.links[kit_id, seq] = link_hash
        self._new_links.append((kit_id, seq, kind, order_id, link_hash, now_iso(), fault,
                                int(verified)))

    def released(self, kit_id: str, seq: int, last: int) -> None:
        """The arrival of new link ``seq`` applied the held links after it up to ``last``."""
        if last > seq:
            self._released[kit_id, seq] = last

    def repeated(self, kit_id: str, seq: int) -> None:
        """Link ``seq`` came again: the sales its first arrival applied from ``held`` are
        answered again (:meth:`released_sales`), for their answers went with its own, and an
        instance killed before the broker had them left only this link for the broker to send
        again. A repeat of a link that came in this same batch needs none: its first arrival's
        answers are this batch's."""
        if (kit_id, seq) in self._released_before:
            self._repeated.append((kit_id, seq))

    def released_sales(self) -> list[tuple[str, str]]:
        """``(kit, order)`` of the sales to answer again for the links :meth:`repeated` named,
        in chain order: at most what each link's first arrival answered."""
        keys = sorted({(kit, n) for kit, seq in self._repeated
                       for n in range(seq + 1, self._released_before[kit, seq] + 1)})
        return [(r["kit_id"], r["order_id"]) for r in self.tx.select_keys(
            "kit_id, seq, type, order_id", "links", keys, ("kit_id", "seq"), ("text", "bigint"),
            "ORDER BY kit_id, seq") if r["type"] == "sale"]

    # Held messages (ahead of a missing link).
    def hold(self, kit_id: str, seq: int, message: dict[str, Any], now: float) -> None:
        if (kit_id, seq) not in self.held:
            self.held[kit_id, seq] = (json.dumps(message), now)
            self._new_held.append((kit_id, seq, self.held[kit_id, seq][0], now))

    def take_held(self, kit_id: str, seq: int) -> dict[str, Any] | None:
        found = self.held.pop((kit_id, seq), None)
        if found is None:
            return None
        self._unheld.append((kit_id, seq))
        return json.loads(found[0])

    def first_held(self, kit_id: str) -> tuple[int, float] | None:
        mine = [(seq, at) for (kit, seq), (_, at) in self.held.items() if kit == kit_id]
        return (min(seq for seq, _ in mine), min(at for _, at in mine)) if mine else None

    def add_fault(self, kit_id: str, seq: int, link_hash: str, kind: str, order_id: str,
                  reason: str) -> None:
        self._faults.append((kit_id, seq, link_hash, kind, order_id, reason, now_iso()))

    # Sales and central stock, read when the batch's sales are decided.
    def load_sales(self, orders: Iterable[tuple[str, str]]) -> None:
        wanted = sorted(set(orders) - self.sales.keys())
        for r in self.tx.select_keys("kit_id, order_id, result, reason, trace_id, lines",
                                     "sales", wanted, ("kit_id", "order_id"), ("text", "text")):
            self.sales[r["kit_id"], r["order_id"]] = r

    def sale(self, kit_id: str, order_id: str) -> Row | None:
        return self.sales.get((kit_id, order_id))

    def add_sale(self, row: Row) -> None:
        self.sales[row["kit_id"], row["order_id"]] = row
        self._new_sales.append(tuple(row[name] for name in SALE_COLUMNS))

    def stock_left(self) -> dict[str, int]:
        """Central stock per SKU (empty when none is loaded), as this batch leaves it so far."""
        if self.stock is None:
            self._stock_read = self._read_stock(self.lock_stock)
            self.stock = dict(self._stock_read)
        return self.stock

    def _read_stock(self, lock: bool) -> dict[str, int]:
        return {r["sku"]: r["left"] for r in self.tx.all(
            f"SELECT sku, qty - sold AS left FROM stock ORDER BY sku"
            f"{self.for_update if lock else ''}")}

    def checked(self, sku: str, margin: int) -> None:
        """A sale was checked against ``sku``: ``margin`` units left after it (below 0:
        refused)."""
        least_passed, most_failed = self._margins.get(sku, (math.inf, -math.inf))
        self._margins[sku] = ((min(least_passed, margin), most_failed) if margin >= 0
                              else (least_passed, max(most_failed, margin)))

    def _stock_stands(self) -> bool:
        """With the stock rows locked now: whether every check decides as it did (each
        margin moves by what the stock moved since it was read, and none may cross 0; a
        refusal's reason says what was left, so its SKU must not have moved at all)."""
        now = self._read_stock(True)
        if now.keys() != self._stock_read.keys():
            return False
        return all(least_passed + moved >= 0 and (moved == 0 or most_failed == -math.inf)
                   for sku, (least_passed, most_failed) in self._margins.items()
                   for moved in [now[sku] - self._stock_read[sku]])

    def sell(self, sku: str, qty: int) -> None:
        """``qty`` more sold (less, for a restock) of ``sku``."""
        self.stock_left()[sku] -= qty
        self._sold[sku] += qty

    def flush(self) -> None:
        """Write every change back (in the caller's transaction)."""
        tx = self.tx
        if self._new_links:
            tx.insert_rows("links", LINK_COLUMNS, [
                (*row, self._released.get((row[0], row[1]), 0)) for row in self._new_links])
        if self._chains_changed:
            tx.set_chains([(kit, *self.chains[kit]) for kit in sorted(self._chains_changed)])
        # Held rows are only ever written under their kit's lock, so the batch knows them
        # all: what it takes it deletes, what it holds is new (no conflict to allow for).
        if self._unheld:
            tx.delete_keys("held", self._unheld, ("kit_id", "seq"), ("text", "bigint"))
        still_held = [row for row in self._new_held if (row[0], row[1]) in self.held]
        self.newly_held = len(still_held)
        if still_held:
            tx.insert_rows("held", HELD_COLUMNS, still_held)
        if self._faults:
            tx.executemany("INSERT INTO faults (kit_id, seq, hash, type, order_id, reason, "
                           "received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                           self._faults)
        if self._new_sales:
            tx.insert_rows("sales", SALE_COLUMNS, self._new_sales)
        # Last: the stock rows stay locked only from here to the commit.
        if self.stock is not None and not self.lock_stock and not self._stock_stands():
            raise StockMoved
        if any(self._sold.values()):
            tx.executemany("UPDATE stock SET sold = sold + ? WHERE sku = ?",
                           [(n, sku) for sku, n in sorted(self._sold.items()) if n])
        for name, n in sorted(self.counts.items()):
            tx.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT (name) "
                       "DO UPDATE SET value = counters.value + excluded.value", (name, n))

    def say(self) -> None:
        """The batch's log lines, once it committed."""
        for line in self.said:
            log.info(*line)
        self.said.clear()


HELD_COLUMNS = ("kit_id", "seq", "message", "held_at")
LINK_COLUMNS = ("kit_id", "seq", "type", "order_id", "hash", "received_at", "fault", "verified",
                "released_to")
SALE_COLUMNS = ("kit_id", "order_id", "seq", "total_cents", "lines", "result", "reason",
                "trace_id", "received_at", "sold_at", "clock_synced")
