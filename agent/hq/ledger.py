"""HQ's central ledger in SQLite: the reconciliation rule (:meth:`Ledger.record`) and the report
of what needs a person (``dropkit hq report``).

Each message from a kit is recorded once (repeats are dropped by kit and receipt link, and
answered again), each kit's messages are applied in receipt-chain order (one that arrives ahead
of a missing link waits for it, up to ``hold_s``), each sale is checked against central stock,
and voids and refunds with restock put the stock back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.core.clock import now_iso
from agent.core.manifest import Manifest
from agent.store import connect

log = logging.getLogger("dropkit.hq")

SCHEMA = """
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    qty INTEGER NOT NULL,
    sold INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS sales (
    kit_id TEXT NOT NULL,
    order_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    total_cents INTEGER NOT NULL,
    lines TEXT NOT NULL,
    result TEXT NOT NULL,
    reason TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    sold_at TEXT NOT NULL DEFAULT '',
    clock_synced INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (kit_id, order_id)
);
CREATE TABLE IF NOT EXISTS links (
    kit_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    order_id TEXT NOT NULL,
    hash TEXT NOT NULL,
    received_at TEXT NOT NULL,
    PRIMARY KEY (kit_id, seq)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS chains (kit_id TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS held (
    kit_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    message TEXT NOT NULL,
    held_at REAL NOT NULL,
    PRIMARY KEY (kit_id, seq)
);
"""
HOLD_S = 5.0


def sold_at(sale: sqlite3.Row) -> str:
    """A sale's time as its kit's clock told it, marked when that clock was not set."""
    when = sale["sold_at"] or "at an unknown time"
    return when if sale["clock_synced"] else f"{when} by the kit's clock, which was not set"


class Ledger:
    """The central ledger in SQLite; :meth:`record` is the whole reconciliation rule.

    Each kit's messages are applied in receipt-chain order, so central stock is decided the
    way the kit sold: one that arrives ahead of a missing link is held (durably) until the link
    comes, or for ``hold_s`` seconds, after which the gap is skipped and reported.

    Several processes may share one ledger file: every change is one ``BEGIN IMMEDIATE``
    transaction (WAL, waiting up to 30 s for the lock), the held messages are in the ledger and
    stamped with the wall clock, so the instance that applies a missing link applies the
    messages another instance held behind it, in the same transaction.
    """

    def __init__(self, path: str | Path, hold_s: float = HOLD_S) -> None:
        self.db = connect(path)
        self.db.executescript(SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(sales)")}
        for column, declared in (("sold_at", "TEXT NOT NULL DEFAULT ''"),
                                 ("clock_synced", "INTEGER NOT NULL DEFAULT 1")):
            if column not in columns:  # a ledger from before the kits said so
                self.db.execute(f"ALTER TABLE sales ADD COLUMN {column} {declared}")
        self.hold_s = hold_s
        self.lock = threading.Lock()  # paho's threads record; the main thread releases holds

    def load_stock(self, manifest: Manifest) -> None:
        """Central stock per SKU: the manifest's ``qty`` is what all kits may sell together."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for item in manifest.items:
                self.db.execute("INSERT INTO stock (sku, qty) VALUES (?, ?) ON CONFLICT (sku) "
                                "DO UPDATE SET qty = excluded.qty", (item.sku, item.qty))

    def _count(self, name: str) -> None:
        self.db.execute("INSERT INTO counters VALUES (?, 1) ON CONFLICT (name) "
                        "DO UPDATE SET value = value + 1", (name,))

    def record(self, kit_id: str, message: dict[str, Any],
               now: float | None = None) -> list[dict[str, Any]]:
        """Take one message from a kit; returns the acks to send (none while it is held)."""
        kind, order_id = message.get("type"), message.get("order_id")
        receipt = message.get("receipt") or {}
        if not isinstance(order_id, str) or kind not in ("sale", "void", "refund") \
                or not isinstance(receipt, dict) or not isinstance(receipt.get("seq"), int):
            raise ValueError("not a sale, void or refund with an order_id and a receipt seq")
        seq = receipt["seq"]
        with self.lock, self._transaction():
            if self.db.execute("SELECT 1 FROM links WHERE kit_id = ? AND seq = ?",
                               (kit_id, seq)).fetchone():
                self._count("duplicates")
                return [self._sale(kit_id, message)] if kind == "sale" else []
            expected = self._next_seq(kit_id)
            if seq > expected:
                self.db.execute("INSERT OR IGNORE INTO held VALUES (?, ?, ?, ?)",
                                (kit_id, seq, json.dumps(message), time.time()
                                 if now is None else now))
                return []
            acks = self._apply(kit_id, message)
            if seq == expected:
                acks += self._apply_held(kit_id, seq + 1)
            return acks

    def release_overdue(self, now: float | None = None) -> list[tuple[str, dict[str, Any]]]:
        """Skip the gap before messages held longer than ``hold_s``; ``(kit, ack)`` to send."""
        now = time.time() if now is None else now
        released: list[tuple[str, dict[str, Any]]] = []
        overdue = "SELECT 1 FROM held WHERE held_at <= ? LIMIT 1"
        with self.lock:  # the write lock only when there is something to release
            if self.db.execute(overdue, (now - self.hold_s,)).fetchone() is None:
                return released
        with self.lock, self._transaction():
            for kit_id, first in self.db.execute(
                    "SELECT kit_id, min(seq) FROM held GROUP BY kit_id HAVING min(held_at) <= ?",
                    (now - self.hold_s,)).fetchall():
                log.warning("kit %s: receipt links #%d to #%d never came; going on without them",
                            kit_id, self._next_seq(kit_id), first - 1)
                released += [(kit_id, ack) for ack in self._apply_held(kit_id, first)]
        return released

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _next_seq(self, kit_id: str) -> int:
        row = self.db.execute("SELECT next_seq FROM chains WHERE kit_id = ?",
                              (kit_id,)).fetchone()
        return row[0] if row else 1

    def _apply_held(self, kit_id: str, seq: int) -> list[dict[str, Any]]:
        """Apply held messages from ``seq`` on while the chain has no gap."""
        acks = []
        while row := self.db.execute("SELECT message FROM held WHERE kit_id = ? AND seq = ?",
                                     (kit_id, seq)).fetchone():
            self.db.execute("DELETE FROM held WHERE kit_id = ? AND seq = ?", (kit_id, seq))
            acks += self._apply(kit_id, json.loads(row[0]))
            seq += 1
        return acks

    def _apply(self, kit_id: str, message: dict[str, Any]) -> list[dict[str, Any]]:
        kind, order_id, receipt = message["type"], message["order_id"], message["receipt"]
        self.db.execute("INSERT INTO links VALUES (?, ?, ?, ?, ?, ?)",
                        (kit_id, receipt["seq"], kind, order_id, str(receipt.get("hash", "")),
                         now_iso()))
        self.db.execute("INSERT INTO chains VALUES (?, ?) ON CONFLICT (kit_id) DO UPDATE SET "
                        "next_seq = max(next_seq, excluded.next_seq)",
                        (kit_id, receipt["seq"] + 1))
        if kind == "sale":
            return [self._sale(kit_id, message)]
        self._undo(kit_id, order_id, kind, bool(message.get("restock")))
        return []

    def _sale(self, kit_id: str, message: dict[str, Any]) -> dict[str, Any]:
        order_id = message["order_id"]
        row = self.db.execute("SELECT result, reason, trace_id FROM sales WHERE kit_id = ? "
                              "AND order_id = ?", (kit_id, order_id)).fetchone()
        if row is None:
            lines = message.get("lines") or []
            result, reason = self._check_stock(lines)
            self.db.execute(
                "INSERT INTO sales (kit_id, order_id, seq, total_cents, lines, result, reason, "
                "trace_id, received_at, sold_at, clock_synced) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (kit_id, order_id, message["receipt"]["seq"], int(message.get("total_cents", 0)),
                 json.dumps(lines), result, reason, str(message.get("trace_id", "")), now_iso(),
                 str(message.get("created_at", "")), int(message.get("clock_synced") is not False)))
            row = {"result": result, "reason": reason, "trace_id": message.get("trace_id", "")}
            log.info("kit %s order %s %s%s trace %s", kit_id, order_id, result,
                     f" ({reason})" if reason else "", row["trace_id"] or "-")
        return {"order_id": order_id, "result": row["result"], "reason": row["reason"],
                "trace_id": row["trace_id"]}

    def _check_stock(self, lines: list[Any]) -> tuple[str, str]:
        if not self.db.execute("SELECT 1 FROM stock LIMIT 1").fetchone():
            return "accepted", ""  # no central stock loaded: HQ only keeps the books
        for line in lines:
            sku, qty = line.get("sku"), line.get("qty")
            row = self.db.execute("SELECT qty - sold FROM stock WHERE sku = ?",
                                  (sku,)).fetchone()
            if row is None:
                return "rejected", f"{sku} is not in central stock"
            if row[0] < qty:
                return "rejected", f"{sku}: central stock has {row[0]} left, {qty} sold"
        for line in lines:
            self.db.execute("UPDATE stock SET sold = sold + ? WHERE sku = ?",
                            (line["qty"], line["sku"]))
        return "accepted", ""

    def _undo(self, kit_id: str, order_id: str, kind: str, restock: bool) -> None:
        sale = self.db.execute("SELECT lines, result FROM sales WHERE kit_id = ? AND "
                               "order_id = ?", (kit_id, order_id)).fetchone()
        if sale is None or sale["result"] != "accepted" or (kind == "refund" and not restock):
            return
        for line in json.loads(sale["lines"]):
            self.db.execute("UPDATE stock SET sold = sold - ? WHERE sku = ?",
                            (line["qty"], line["sku"]))

    def report(self) -> list[str]:
        """What needs a person, one line each."""
        lines = [f"rejected: kit {r['kit_id']} order {r['order_id']} (receipt #{r['seq']}, "
                 f"sold {sold_at(r)}): {r['reason']}" for r in self.db.execute(
                     "SELECT * FROM sales WHERE result = 'rejected' ORDER BY received_at")]
        for kit_id, first, n in self.db.execute(
                "SELECT kit_id, min(seq), count(*) FROM held GROUP BY kit_id ORDER BY kit_id"):
            lines.append(f"held: kit {kit_id} has {n} message(s) from receipt #{first} on "
                         f"waiting for #{self._next_seq(kit_id)}")
        for kit in self.db.execute("SELECT kit_id, max(seq) AS top, count(*) AS n FROM links "
                                   "GROUP BY kit_id ORDER BY kit_id"):
            if kit["n"] != kit["top"]:
                have = {r[0] for r in self.db.execute("SELECT seq FROM links WHERE kit_id = ?",
                                                      (kit["kit_id"],))}
                missing = [seq for seq in range(1, kit["top"] + 1) if seq not in have]
                shown = ", ".join(f"#{seq}" for seq in missing[:20])
                lines.append(f"gap: kit {kit['kit_id']} receipt chain misses {len(missing)} "
                             f"link(s): {shown}{' ...' if len(missing) > 20 else ''}")
        return lines
