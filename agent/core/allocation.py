"""Allocations from HQ: the manifest HQ publishes for this kit (retained on
``<prefix>/<kit>/manifest``, numbered by ``seq``), taken by the rule of a staff load
(:func:`agent.core.manifest.apply_manifest`: never below what the kit sold or holds), and the
kit's answer for HQ (on ``<prefix>/<kit>/manifest/answer``; docs/mqtt.md, "Allocations").

Each allocation is taken once: one numbered no higher than the last taken is answered again as
it was (the broker sends the retained one at every connection), and never applied again over a
manifest staff loaded since.

    >>> parse_allocation(b'{"seq": 2, "manifest": {"version": "hq-2", "items": ['
    ...                  b'{"sku": "TEE", "name": "Tee", "price_cents": 2500, "qty": 5}]}}')[0]
    2
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from agent.core.manifest import (
    Manifest,
    ManifestConflict,
    ManifestError,
    apply_manifest,
    current_manifest,
    parse_manifest,
)

KEY = "hq_allocation"
"""``meta`` key: the answer to the last allocation taken (with its ``seq``)."""


def parse_allocation(payload: bytes) -> tuple[int, Manifest]:
    """``(seq, manifest)`` of HQ's message; ManifestError naming what is wrong. (Its size is
    bounded before: the kit's session reads no packet over 16 KiB, and HQ publishes no
    manifest that would not fit.)"""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        raise ManifestError("an allocation is a JSON object") from None
    if not isinstance(data, dict) or set(data) != {"seq", "manifest"}:
        raise ManifestError("an allocation has 'seq' and 'manifest'")
    seq = data["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ManifestError("an allocation's 'seq' is a whole number from 1")
    return seq, parse_manifest(data["manifest"])


def take_allocation(db: sqlite3.Connection, seq: int, manifest: Manifest,
                    now: str) -> dict[str, Any]:
    """Take HQ's allocation number ``seq`` inside the caller's transaction; the answer for HQ:
    ``{"seq", "result": "applied" | "refused", "version", "hash", "conflict"}`` (``version`` and
    ``hash``: the manifest the kit sells now; ``conflict``: ``{sku: {"taken", "qty"}}`` when
    refused), and, not sent, ``changed`` (whether the kit's manifest changed) and ``again``
    (true for an allocation taken before: the answer is the one given then)."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (KEY,)).fetchone()
    if row is not None and json.loads(row[0])["seq"] >= seq:
        return {**json.loads(row[0]), "changed": False, "again": True}
    try:
        changed = apply_manifest(db, manifest, "hq", now)
        result, conflict = "applied", None
    except ManifestConflict as exc:
        changed, result = False, "refused"
        conflict = {sku: {"taken": taken, "qty": qty} for sku, (taken, qty) in exc.skus.items()}
    loaded = current_manifest(db)
    answer = {"seq": seq, "result": result, "conflict": conflict,
              "version": loaded["version"] if loaded else None,
              "hash": loaded["content_hash"] if loaded else None}
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (KEY, json.dumps(answer)))
    return {**answer, "changed": changed, "again": False}
