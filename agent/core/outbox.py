"""The durable outbox: messages for the uplink, written in the same transaction as their cause.

A sale, a void, a refund or an event is a row here before anyone is told it happened; the uplink
publishes the rows in id order and marks each relayed only after the broker's PUBACK. Nothing in
memory is trusted: after a crash, every row not marked relayed is sent again (MQTT QoS 1 is at
least once anyway, and HQ drops duplicates by order id).

Kinds and their topics: ``sale``, ``void`` and ``refund`` go to ``orders``; ``event`` to
``events``. Each topic's payload, as published (with ``type`` and ``msg_id``), is the JSON Schema
of the topic's name: ``agent/schemas/orders.schema.json`` and ``agent/schemas/events.schema.json``
(``agent.schemas.load(SCHEMA_OF_KIND[kind])``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from agent.core.clock import Moment
from agent.core.receipts import canonical_json

TOPIC_OF_KIND = {"sale": "orders", "void": "orders", "refund": "orders", "event": "events"}
SCHEMA_OF_KIND = TOPIC_OF_KIND
"""The schema in :mod:`agent.schemas` each kind's published payload follows."""


def enqueue(db: sqlite3.Connection, kind: str, key: str, payload: dict[str, Any],
            now: str) -> int:
    """Add a message inside the caller's transaction; ``payload`` gets ``type`` = ``kind``."""
    return db.execute("INSERT INTO outbox (kind, key, payload, created_at) VALUES (?, ?, ?, ?)",
                      (kind, key, canonical_json({**payload, "type": kind}), now)).lastrowid


def record_event(db: sqlite3.Connection, event: dict[str, Any], kit_id: str, now: str) -> int:
    """An event for remote ops (``event["type"]`` says which), durable like a sale.

    Published on ``events``; the payload follows ``agent/schemas/events.schema.json``, which
    lists the event types and the fields each one must carry.
    """
    return enqueue(db, "event", event.get("order_id", ""),
                   {"kit_id": kit_id, "ts": now, "event": event}, now)


def pending(db: sqlite3.Connection, after_id: int, limit: int) -> list[sqlite3.Row]:
    """The next rows to publish. A sale's, void's or refund's ``receipt`` gets what HQ needs
    to check its link, read from the chain as it stands (never stored twice): ``prev`` (the
    hash before it) and ``body`` (the canonical JSON hashed), and the link's ``hash``."""
    return db.execute(
        "SELECT o.id, o.kind, o.key, CASE WHEN r.seq IS NULL THEN o.payload ELSE json_set("
        "o.payload, '$.receipt.hash', r.hash, '$.receipt.prev', r.prev_hash, '$.receipt.body', "
        "r.body) END AS payload FROM outbox o LEFT JOIN receipts r ON o.kind != 'event' AND "
        "r.seq = json_extract(o.payload, '$.receipt.seq') WHERE o.relayed_at IS NULL "
        "AND o.id > ? ORDER BY o.id LIMIT ?", (after_id, limit)).fetchall()


def depth(db: sqlite3.Connection) -> int:
    return db.execute("SELECT count(*) FROM outbox WHERE relayed_at IS NULL").fetchone()[0]


def waiting(db: sqlite3.Connection) -> dict[str, int]:
    """The messages not yet relayed, by kind (``sale``, ``void``, ``refund``, ``event``): the
    till says "2 sales waiting to reach HQ", not the depth, which counts events too."""
    return dict(db.execute("SELECT kind, count(*) FROM outbox WHERE relayed_at IS NULL "
                           "GROUP BY kind").fetchall())


def mark_relayed(db: sqlite3.Connection, ids: Sequence[int], at: Moment) -> None:
    """The broker has these messages: mark them, and their sales as relayed."""
    marks = ",".join("?" * len(ids))
    db.execute(f"UPDATE outbox SET relayed_at = ? WHERE id IN ({marks}) AND relayed_at IS NULL",
               (at.iso, *ids))
    db.execute(f"UPDATE orders SET status = 'relayed', relayed_at = ?, relayed_ks = ?, "
               f"updated_at = ? WHERE status = 'queued' AND order_id IN "
               # NOT INDEXED: by (kind, key) SQLite would scan every sale ever queued.
               f"(SELECT key FROM outbox NOT INDEXED WHERE kind = 'sale' AND id IN ({marks}))",
               (at.iso, at.ks, at.iso, *ids))


def with_message_id(payload: str, message_id: int) -> str:
    """The payload as published: the outbox id rides along so HQ can drop repeats."""
    # The stored payload is a canonical JSON object; appending a member keeps it valid JSON
    # without parsing and re-serialising every message during a long drain.
    return f'{payload[:-1]},"msg_id":{message_id}}}'
