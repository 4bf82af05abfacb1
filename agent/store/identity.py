"""The kit's identity, kept beside its database: ``dropkit.identity``.

A database that was emptied, replaced by another or rolled back to an older copy must not
start as a new kit: it would issue receipt #1 again and sell the manifest's full stock once
more. So the state directory holds, beside ``dropkit.db``, a small JSON file with what cannot
change (the kit's id, the database's own id, kept in its ``meta`` table as ``store_id``, and
the hash of receipt #1) and a high-water mark (the last receipt's seq and hash), and the start
compares the two (:func:`mismatch`).

The file is written durably (a new file, fsynced, renamed over the old one, then the directory
fsynced), and only when it changes: once at the first start, once at receipt #1, then the mark
at most every :data:`MARK_EVERY_S` seconds while receipts are issued, and at the stop. An order
costs no write of its own here. docs/store.md says what a rollback within that window can and
cannot be caught.

    >>> import sqlite3
    >>> db = sqlite3.connect(":memory:")
    >>> read_facts(db, 0)
    Facts(store_id='', first_hash=None, last_seq=0, last_hash=None, hash_at_mark=None)
    >>> mark = Identity("kit-a", "s-1", "h1", 5, "h5")
    >>> mismatch(mark, Facts("s-1", "h1", 3, "h3", None), "kit-a")
    'the database ends at receipt #3, but this kit had issued receipt #5: it was rolled back'
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

IDENTITY_NAME = "dropkit.identity"
STORE_ID_KEY = "store_id"
MARK_EVERY_S = 60.0
"""The high-water mark is written at most this often while receipts are issued (and at stop)."""


class IdentityError(RuntimeError):
    """The identity file is there but cannot be read."""


@dataclass(frozen=True)
class Identity:
    """What the state directory says the kit's store is."""

    kit_id: str
    store_id: str
    first_hash: str | None = None
    seq: int = 0
    """The high-water mark: the last receipt's seq when the mark was written (0: none yet)."""
    hash: str | None = None

    @property
    def history(self) -> str:
        """What the kit did with its store, as the end of a sentence."""
        return (f"this kit has issued receipts up to #{self.seq}" if self.seq
                else "this kit has run on it before")

    def marked(self, facts: Facts) -> Identity:
        """This identity with the mark (and receipt #1's hash) of ``facts``."""
        return dataclasses.replace(self, first_hash=self.first_hash or facts.first_hash,
                                   seq=facts.last_seq, hash=facts.last_hash)


@dataclass(frozen=True)
class Facts:
    """What the database says about itself."""

    store_id: str
    first_hash: str | None
    last_seq: int
    last_hash: str | None
    hash_at_mark: str | None
    """The hash of the receipt at the identity's mark (None: no such receipt)."""


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def read_facts(db: sqlite3.Connection, mark_seq: int) -> Facts:
    """The database's id, receipt #1's hash, its last receipt, and the receipt at ``mark_seq``;
    an empty database has none of them."""
    tables = _tables(db)
    store_id = ""
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (STORE_ID_KEY,)).fetchone()
        store_id = row[0] if row else ""
    if "receipts" not in tables:
        return Facts(store_id, None, 0, None, None)

    def hash_of(seq: int) -> str | None:
        row = db.execute("SELECT hash FROM receipts WHERE seq = ?", (seq,)).fetchone()
        return row[0] if row else None

    last = db.execute("SELECT seq, hash FROM receipts ORDER BY seq DESC LIMIT 1").fetchone()
    return Facts(store_id, hash_of(1), last[0] if last else 0, last[1] if last else None,
                 hash_of(mark_seq) if mark_seq else None)


def new_store_id(db: sqlite3.Connection) -> str:
    """Give a database without one its own id (in its ``meta`` table); returns it."""
    store_id = uuid.uuid4().hex
    db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (STORE_ID_KEY, store_id))
    return store_id


def mismatch(identity: Identity, facts: Facts, kit_id: str) -> str:
    """Why the database is not the one ``identity`` describes, in one sentence; empty when it
    is."""
    sold = identity.history
    if identity.kit_id != kit_id:
        return (f"this store belongs to kit {identity.kit_id}, but the config names kit "
                f"{kit_id}")
    if not facts.store_id:
        return f"the database is empty, but {sold}"
    if facts.store_id != identity.store_id:
        return f"the database is not this kit's (another store's id), and {sold}"
    if identity.first_hash is not None and facts.first_hash != identity.first_hash:
        return "receipt #1 in the database is not this kit's first receipt"
    if facts.last_seq < identity.seq:
        return (f"the database ends at receipt #{facts.last_seq}, but this kit had issued "
                f"receipt #{identity.seq}: it was rolled back")
    if identity.seq and facts.hash_at_mark != identity.hash:
        return f"receipt #{identity.seq} in the database is not the one this kit issued"
    return ""


def load(path: Path) -> Identity | None:
    """The identity file at ``path``; None when there is none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Identity(kit_id=str(data["kit_id"]), store_id=str(data["store_id"]),
                        first_hash=data.get("first_hash"), seq=int(data.get("seq", 0)),
                        hash=data.get("hash"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"{path.name} cannot be read ({exc})") from None


def save(path: Path, identity: Identity) -> None:
    """Write ``identity`` durably: a new file, fsynced, renamed over the old, the directory
    fsynced. Raises OSError (the old file is then still whole)."""
    temporary = path.with_name(path.name + ".new")
    body = json.dumps(dataclasses.asdict(identity), indent=1, sort_keys=True) + "\n"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(body)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
