"""The ledger's database: SQLite (a file, the default) or PostgreSQL (``postgresql://...``),
behind one small seam so the rules in :mod:`agent.hq.ledger` are written once.

The rules write SQL with ``?`` placeholders in the subset both speak (``ON CONFLICT``, ``BIGINT``,
``DOUBLE PRECISION``); rows come back as dicts. What differs is here:

- a write transaction: SQLite's ``BEGIN IMMEDIATE`` takes the whole file (one writer at a time,
  waiting up to 30 s, across processes on one host); PostgreSQL's is an ordinary transaction
  that locks what it touches: each kit's chain (:meth:`Tx.lock_chains`, an advisory lock per
  kit, in kit order) and the central stock rows (``SELECT ... FOR UPDATE``,
  :attr:`Database.for_update`);
- the schema's version: a table of its own, and for a SQLite ledger from before it, the
  columns it has (:func:`legacy_version`);
- a dropped connection (PostgreSQL restarted): :attr:`Database.transient` names the errors that
  mean "try again later", never "this message is bad".

    >>> import tempfile, os
    >>> db = open_database(os.path.join(tempfile.mkdtemp(), "hq.db"))
    >>> with db.transaction() as tx:
    ...     tx.execute("INSERT INTO counters VALUES (?, ?)", ("x", 1)).rowcount
    1
    >>> with db.reading() as tx:
    ...     tx.one("SELECT value FROM counters WHERE name = ?", ("x",))
    {'value': 1}
    >>> db.close()
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent.hq import schema

Row = dict[str, Any]


CHAIN_LOCKS = 0x6B6974  # the advisory lock class of a kit's chain (the other key: its name's hash)


def is_postgresql(target: str | Path) -> bool:
    return str(target).startswith(("postgresql://", "postgres://"))


@functools.lru_cache(maxsize=256)
def _pyformat(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class Tx:
    """One transaction (or one read) on either database."""

    def __init__(self, conn: Any, postgresql: bool) -> None:
        self.conn, self.postgresql = conn, postgresql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(_pyformat(sql) if self.postgresql else sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if self.postgresql:  # psycopg sends them in one pipeline
            self.conn.cursor().executemany(_pyformat(sql), rows)
        else:
            self.conn.executemany(sql, rows)

    def select_keys(self, columns: str, table: str, keys: Sequence[tuple[Any, ...]],
                    key_columns: Sequence[str], key_types: Sequence[str],
                    then: str = "") -> list[Row]:
        """``SELECT columns FROM table`` of the rows whose ``key_columns`` are one of ``keys``
        (``key_types``: their PostgreSQL types), then ``then`` (``ORDER BY ...``)."""
        if not keys:
            return []
        names = ", ".join(key_columns)
        if self.postgresql:  # one array per key column: a short query, whatever the count
            arrays = ", ".join(f"%s::{kind}[]" for kind in key_types)
            return self.conn.execute(
                f"SELECT {columns} FROM {table} JOIN unnest({arrays}) AS k({names}) "
                f"USING ({names}) {then}", [list(column) for column in zip(*keys, strict=True)]
            ).fetchall()
        found: list[Row] = []
        one = f"({', '.join('?' * len(key_columns))})"
        for start in range(0, len(keys), 400):  # well inside SQLite's limit on parameters
            part = keys[start:start + 400]
            found += self.conn.execute(
                f"SELECT {columns} FROM {table} WHERE ({names}) IN (VALUES "
                f"{', '.join([one] * len(part))}) {then}",
                [value for key in part for value in key]).fetchall()
        return found

    def delete_keys(self, table: str, keys: Sequence[tuple[Any, ...]],
                    key_columns: Sequence[str], key_types: Sequence[str]) -> None:
        """``DELETE`` the rows whose ``key_columns`` are one of ``keys``: one statement on
        PostgreSQL (an array per key column, as :meth:`select_keys`)."""
        names = ", ".join(key_columns)
        if not self.postgresql:
            self.conn.executemany(f"DELETE FROM {table} WHERE ({names}) = "
                                  f"({', '.join('?' * len(key_columns))})", keys)
            return
        arrays = ", ".join(f"%s::{kind}[]" for kind in key_types)
        self.conn.execute(f"DELETE FROM {table} WHERE ({names}) IN (SELECT * FROM "
                          f"unnest({arrays}))",
                          [list(column) for column in zip(*keys, strict=True)])

    def insert_rows(self, table: str, columns: Sequence[str],
                    rows: Sequence[Sequence[Any]]) -> None:
        """Plain inserts of many rows: PostgreSQL's ``COPY`` (one stream, no statement per
        row), SQLite's ``executemany``."""
        names = ", ".join(columns)
        if not self.postgresql:
            self.conn.executemany(f"INSERT INTO {table} ({names}) VALUES "
                                  f"({', '.join('?' * len(columns))})", rows)
            return
        with self.conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def set_chains(self, rows: Sequence[tuple[str, int, str]]) -> None:
        """Each ``(kit, next seq, head hash)``, in one statement on PostgreSQL."""
        upsert = ("ON CONFLICT (kit_id) DO UPDATE SET next_seq = excluded.next_seq, "
                  "head_hash = excluded.head_hash")
        if not self.postgresql:
            self.conn.executemany("INSERT INTO chains (kit_id, next_seq, head_hash) VALUES "
                                  f"(?, ?, ?) {upsert}", rows)
            return
        kits, seqs, heads = zip(*rows, strict=True)
        self.conn.execute("INSERT INTO chains (kit_id, next_seq, head_hash) SELECT * FROM "
                          f"unnest(%s::text[], %s::bigint[], %s::text[]) {upsert}",
                          (list(kits), list(seqs), list(heads)))

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        return self.execute(sql, params).fetchone()

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.execute(sql, params).fetchall()

    def lock_chains(self, kits: Sequence[str]) -> None:
        """Hold these kits' chains until the transaction ends: on PostgreSQL an advisory lock
        per kit (no row is written to take it), always in kit order, so two instances never
        wait for each other in a circle; SQLite's transaction holds the whole file already."""
        if self.postgresql and kits:
            self.conn.execute(f"SELECT count(pg_advisory_xact_lock({CHAIN_LOCKS}, hashtext(k))) "
                              "FROM (SELECT DISTINCT unnest(%s::text[]) AS k ORDER BY k) AS kits",
                              (list(kits),))


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class Database:
    """The ledger's connections: :meth:`transaction` to write, :meth:`reading` to read."""

    postgresql = False
    for_update = ""
    """What a ``SELECT`` ends with to lock the rows it reads until the transaction ends."""
    transient: tuple[type[BaseException], ...] = ()
    """Errors that say the database is away for now (the batch is tried again later)."""
    target = ""

    def transaction(self) -> contextlib.AbstractContextManager[Tx]:
        raise NotImplementedError

    def reading(self) -> contextlib.AbstractContextManager[Tx]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SQLiteDatabase(Database):
    """A SQLite file: one writer and one reader connection, each used by one thread at a time."""

    def __init__(self, target: str | Path) -> None:
        from agent.store import connect

        self.target = str(target)
        self._writer, self._reader = connect(target), connect(target)
        for conn in (self._writer, self._reader):
            conn.row_factory = _dict_row
        self._write_lock, self._read_lock = threading.Lock(), threading.Lock()
        self.transient = (sqlite3.OperationalError,)  # "database is locked" past its 30 s
        self._migrate()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield Tx(self._writer, False)
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")

    @contextlib.contextmanager
    def reading(self) -> Iterator[Tx]:
        with self._read_lock:
            yield Tx(self._reader, False)

    def _migrate(self) -> None:
        with self.transaction() as tx:
            tx.execute(schema.VERSION_TABLE)
            row = tx.one("SELECT max(version) AS version FROM ledger_schema")
            if row["version"] is None:
                tx.execute("INSERT INTO ledger_schema VALUES (?)", (legacy_version(
                    {r["name"]: {c["name"] for c in tx.all(f"PRAGMA table_info({r['name']})")}
                     for r in tx.all("SELECT name FROM sqlite_master WHERE type = 'table'")}),))
            migrate(tx)

    def close(self) -> None:
        self._writer.close()
        self._reader.close()


class PostgresDatabase(Database):
    """PostgreSQL through psycopg 3 and its connection pool (the ``hq`` extra)."""

    postgresql = True
    for_update = " FOR UPDATE"

    def __init__(self, target: str | Path, pool_size: int = 4) -> None:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        self.target = str(target)
        self.transient = (psycopg.OperationalError,)
        self.pool = ConnectionPool(self.target, min_size=1, max_size=pool_size, open=True,
                                   kwargs={"autocommit": True, "row_factory": dict_row},
                                   check=ConnectionPool.check_connection, timeout=30)
        self._migrate()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self.pool.connection() as conn, conn.transaction():
            yield Tx(conn, True)

    @contextlib.contextmanager
    def reading(self) -> Iterator[Tx]:
        with self.pool.connection() as conn:
            yield Tx(conn, True)

    def _migrate(self) -> None:
        with self.transaction() as tx:
            # Instances starting together migrate one after the other.
            tx.execute("SELECT pg_advisory_xact_lock(?)", (schema.MIGRATION_LOCK,))
            tx.execute(schema.VERSION_TABLE)
            if tx.one("SELECT max(version) AS version FROM ledger_schema")["version"] is None:
                tx.execute("INSERT INTO ledger_schema VALUES (0)")
            migrate(tx)

    def close(self) -> None:
        self.pool.close()


def legacy_version(tables: dict[str, set[str]]) -> int:
    """The version of a SQLite ledger from before ``ledger_schema``, by its tables' columns."""
    if "sales" not in tables:
        return 0
    return 2 if "sold_at" in tables["sales"] else 1


def migrate(tx: Tx) -> int:
    """Run the missing migrations; returns the version reached."""
    version = tx.one("SELECT max(version) AS version FROM ledger_schema")["version"]
    if version > len(schema.MIGRATIONS):
        raise RuntimeError(f"the ledger's schema is version {version}, newer than this HQ "
                           f"({len(schema.MIGRATIONS)}): run the newer dropkit hq")
    for number, statements in enumerate(schema.MIGRATIONS[version:], start=version + 1):
        for statement in statements:
            tx.execute(statement)
        tx.execute("UPDATE ledger_schema SET version = ?", (number,))
    return len(schema.MIGRATIONS)


def open_database(target: str | Path) -> Database:
    """The ledger at ``target``: a ``postgresql://`` URL, else a SQLite file's path."""
    return PostgresDatabase(target) if is_postgresql(target) else SQLiteDatabase(target)
