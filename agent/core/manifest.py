"""The kit's manifest: what it may sell, at what price, and how many of each.

A manifest is TOML (or JSON) with a ``version`` and ``items``, each with ``sku``, ``name``,
``price_cents`` (an integer) and ``qty`` (the quantity allocated to this kit)::

    version = "market-2026-11-28"
    [[items]]
    sku = "TEE-BLK-M"
    name = "Tee, black, M"
    price_cents = 2500
    qty = 40
    limit_per_customer = 2                  # optional: at most 2 per customer's reservations
    opens_at = 2026-11-28T10:00:00+01:00    # optional: nothing sells before (a fair drop)

Its content hash is taken over the canonical JSON of what it says, so the same manifest sent as
a file or over HTTP has the same hash. Loading a manifest keeps what was sold: an allocation
smaller than what is already sold is refused, and an item left out stops selling but keeps its
history.

The store is the one source of truth: the manifest last loaded (from the configured file or
over HTTP) is what the kit sells, across restarts. The configured file is applied at a start
only when it changed since it was last taken up (:func:`apply_file`), and a file that would
un-sell stock is refused without stopping the start: the refusal is kept in ``meta`` under
:data:`FILE_KEY` (the SKUs, what was sold and what the file allows) until a manifest loads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.core.receipts import canonical_json

SKU_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:/+")
MAX_ITEMS = 2000
ITEM_KEYS = ("sku", "name", "price_cents", "qty", "limit_per_customer", "opens_at")


class ManifestError(ValueError):
    """A manifest that cannot be used; the message says which item and field."""


class ManifestConflict(ValueError):
    """A manifest that would un-sell stock: allocations below what is already sold (or held
    for customers' reservations)."""

    def __init__(self, skus: dict[str, tuple[int, int]]) -> None:
        self.skus = skus
        detail = ", ".join(f"{sku} (sold or held {sold}, new qty {qty})"
                           for sku, (sold, qty) in sorted(skus.items()))
        super().__init__(f"new quantities below what is already sold or held: {detail}")


@dataclass(frozen=True)
class Item:
    sku: str
    name: str
    price_cents: int
    qty: int
    limit_per_customer: int | None = None
    """The most one customer's reservations may hold of it (None: no limit)."""
    opens_at: str | None = None
    """When it goes on sale, UTC in the kit's own ISO form (None: on sale now)."""

    def to_dict(self) -> dict[str, Any]:
        """What the item says; the optional keys only when set, so a manifest without them
        keeps the hash it always had."""
        return {key: value for key in ITEM_KEYS
                if (value := getattr(self, key)) is not None}


@dataclass(frozen=True)
class Manifest:
    version: str
    items: tuple[Item, ...]

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "items": [item.to_dict() for item in self.items]}


def valid_sku(sku: object) -> bool:
    return isinstance(sku, str) and 0 < len(sku) <= 64 and set(sku) <= SKU_CHARS


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def utc_iso(when: datetime) -> str:
    """``when`` (aware) as the kit writes times: UTC, ISO 8601 to the millisecond.

    >>> utc_iso(datetime.fromisoformat("2026-11-28T10:00:00+01:00"))
    '2026-11-28T09:00:00.000+00:00'
    """
    return when.astimezone(UTC).isoformat(timespec="milliseconds")


def _opening(value: object, where: str) -> str | None:
    """An item's ``opens_at``: a TOML date-time or an ISO 8601 text, with its time zone."""
    if value is None:
        return None
    if isinstance(value, str) and len(value) <= 40:
        with contextlib.suppress(ValueError):  # not a time: refused below
            value = datetime.fromisoformat(value)
    if not isinstance(value, datetime) or value.utcoffset() is None:
        raise ManifestError(f"{where}: 'opens_at' must be a date and time with its time zone, "
                            f"e.g. 2026-11-28T10:00:00+01:00")
    return utc_iso(value)


def parse_manifest(data: object) -> Manifest:
    """Check a parsed manifest document; raises :class:`ManifestError` naming the fault."""
    if not isinstance(data, dict):
        raise ManifestError("a manifest is a table with 'version' and 'items'")
    unknown = set(data) - {"version", "items"}
    if unknown:
        raise ManifestError(f"unknown key {sorted(unknown)[0]!r}; expected 'version' and 'items'")
    version = data.get("version")
    if not isinstance(version, str) or not 0 < len(version) <= 100:
        raise ManifestError("'version' must be a string of 1 to 100 characters")
    raw_items = data.get("items")
    if not isinstance(raw_items, list) or not raw_items:
        raise ManifestError("'items' must be a non-empty list")
    if len(raw_items) > MAX_ITEMS:
        raise ManifestError(f"at most {MAX_ITEMS} items, got {len(raw_items)}")
    items, seen = [], set()
    for n, raw in enumerate(raw_items, 1):
        where = f"item {n}"
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: expected a table with sku, name, price_cents, qty")
        extra = set(raw) - set(ITEM_KEYS)
        if extra:
            raise ManifestError(f"{where}: unknown key {sorted(extra)[0]!r}")
        sku, name = raw.get("sku"), raw.get("name")
        price, qty = raw.get("price_cents"), raw.get("qty")
        if not valid_sku(sku):
            raise ManifestError(f"{where}: 'sku' must be 1 to 64 letters, digits or -_.:/+")
        where = f"item {n} ({sku})"
        if sku in seen:
            raise ManifestError(f"{where}: sku listed twice")
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise ManifestError(f"{where}: 'name' must be a string of 1 to 200 characters")
        if not _whole(price) or not 0 <= price <= 100_000_000:
            raise ManifestError(f"{where}: 'price_cents' must be a whole number of cents, "
                                f"0 to 100000000")
        if not _whole(qty) or not 0 <= qty <= 1_000_000:
            raise ManifestError(f"{where}: 'qty' must be a whole number, 0 to 1000000")
        limit = raw.get("limit_per_customer")
        if limit is not None and (not _whole(limit) or not 1 <= limit <= 1_000_000):
            raise ManifestError(f"{where}: 'limit_per_customer' must be a whole number, "
                                f"1 to 1000000")
        seen.add(sku)
        items.append(Item(sku, name, price, qty, limit, _opening(raw.get("opens_at"), where)))
    return Manifest(version, tuple(items))


def read_manifest(path: str | Path) -> Manifest:
    """Read a manifest file (``.json`` as JSON, anything else as TOML)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{path}: not UTF-8 text") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ManifestError(f"{path}: cannot parse: {exc}") from None
    try:
        return parse_manifest(data)
    except ManifestError as exc:
        raise ManifestError(f"{path}: {exc}") from None


def current_manifest(db: sqlite3.Connection) -> sqlite3.Row | None:
    return db.execute("SELECT id, version, content_hash, loaded_at, source FROM manifests "
                      "ORDER BY id DESC LIMIT 1").fetchone()


FILE_KEY = "manifest_file"
"""``meta`` key: the configured file as last taken up, JSON ``{"hash", "version", "source",
"conflict"}``; ``conflict`` is ``{sku: [sold, qty]}`` while the file is refused, else null."""


def _file_record(db: sqlite3.Connection) -> dict[str, Any] | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (FILE_KEY,)).fetchone()
    return None if row is None else json.loads(row[0])


def _last_file_hash(db: sqlite3.Connection) -> str | None:
    record = _file_record(db)
    if record is not None:
        return record["hash"]
    # A store from before FILE_KEY: the last manifest that did not come over HTTP.
    row = db.execute("SELECT content_hash FROM manifests WHERE source != 'staff' "
                     "ORDER BY id DESC LIMIT 1").fetchone()
    return None if row is None else row[0]


def apply_file(db: sqlite3.Connection, manifest: Manifest, source: str,
               now: str) -> ManifestConflict | None:
    """Take up the configured manifest file at a start, inside the caller's transaction.

    A file whose content is the one taken up last time is not applied again (a manifest loaded
    over HTTP since stays). A changed file is applied; one that would un-sell stock changes
    nothing and is returned as the :class:`ManifestConflict`, kept for :func:`file_conflict`.
    """
    if _last_file_hash(db) == manifest.content_hash:
        return None
    try:
        apply_manifest(db, manifest, source, now)
        conflict = None
    except ManifestConflict as exc:
        conflict = exc
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?) "
               "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
               (FILE_KEY, json.dumps({
                   "hash": manifest.content_hash, "version": manifest.version, "source": source,
                   "conflict": None if conflict is None else
                   {sku: list(pair) for sku, pair in conflict.skus.items()}})))
    return conflict


def file_conflict(db: sqlite3.Connection) -> dict[str, Any] | None:
    """The configured file refused for a conflict and not resolved since, as health shows it:
    ``file``, ``version`` and ``skus`` (``{sku: {"sold", "file_qty"}}``); else None."""
    record = _file_record(db)
    if record is None or not record.get("conflict"):
        return None
    return {"file": record["source"], "version": record["version"],
            "skus": {sku: {"sold": sold, "file_qty": qty}
                     for sku, (sold, qty) in sorted(record["conflict"].items())}}


def conflict_words(conflict: dict[str, Any]) -> str:
    """A :func:`file_conflict` in plain words, naming the SKUs.

    >>> conflict_words({"skus": {"TEE-M": {"sold": 5, "file_qty": 3}}})
    'more was sold than it allows: TEE-M (sold 5, the file allows 3)'
    """
    return "more was sold than it allows: " + ", ".join(
        f"{sku} (sold {n['sold']}, the file allows {n['file_qty']})"
        for sku, n in conflict["skus"].items())


def apply_manifest(db: sqlite3.Connection, manifest: Manifest, source: str, now: str) -> bool:
    """Make ``manifest`` the kit's inventory inside the caller's transaction.

    Returns False when it is already the current one. Raises :class:`ManifestConflict` (and
    changes nothing) when a quantity is below what is already sold. A manifest taken, even the
    current one again, settles a refused file (:func:`file_conflict` is None after it).
    """
    existing = {row["sku"]: row for row in db.execute(
        "SELECT sku, allocated, sold + held AS taken FROM items")}
    # Units held for customers' reservations count as taken: a manifest cannot un-hold them.
    conflicts = {item.sku: (existing[item.sku]["taken"], item.qty) for item in manifest.items
                 if item.sku in existing and existing[item.sku]["taken"] > item.qty}
    if conflicts:
        raise ManifestConflict(conflicts)
    db.execute("UPDATE meta SET value = json_set(value, '$.conflict', json('null')) "
               "WHERE key = ? AND json_extract(value, '$.conflict') IS NOT NULL", (FILE_KEY,))
    loaded = current_manifest(db)
    if loaded is not None and loaded["content_hash"] == manifest.content_hash:
        return False
    manifest_id = db.execute(
        "INSERT INTO manifests (version, content_hash, loaded_at, source) VALUES (?, ?, ?, ?)",
        (manifest.version, manifest.content_hash, now, source)).lastrowid

    def record(sku: str, delta: int) -> None:
        if delta:
            db.execute("INSERT INTO stock_ledger (sku, field, delta, reason, manifest_id, at) "
                       "VALUES (?, 'allocated', ?, 'manifest', ?, ?)",
                       (sku, delta, manifest_id, now))

    listed = set()
    for position, item in enumerate(manifest.items):
        listed.add(item.sku)
        before = existing[item.sku]["allocated"] if item.sku in existing else 0
        db.execute(
            "INSERT INTO items (sku, name, price_cents, allocated, active, position, "
            "limit_per_customer, opens_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?) "
            "ON CONFLICT (sku) DO UPDATE SET name = excluded.name, "
            "price_cents = excluded.price_cents, allocated = excluded.allocated, active = 1, "
            "position = excluded.position, limit_per_customer = excluded.limit_per_customer, "
            "opens_at = excluded.opens_at",
            (item.sku, item.name, item.price_cents, item.qty, position,
             item.limit_per_customer, item.opens_at))
        record(item.sku, item.qty - before)
    for sku, row in existing.items():
        if sku not in listed:
            # Left out: nothing more to sell, but what was sold (or is held) stays on the books.
            db.execute("UPDATE items SET allocated = sold + held, active = 0 WHERE sku = ?",
                       (sku,))
            record(sku, row["taken"] - row["allocated"])
    return True
