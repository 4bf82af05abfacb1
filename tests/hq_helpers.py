"""HQ's ledger on both databases for the tests: a SQLite file, or a PostgreSQL database of the
test's own on 127.0.0.1:5432 (user postgres, trust auth), created for it and dropped after; and a
kit's ``orders`` messages as its uplink publishes them, from a real kit store."""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent.core import outbox

POSTGRES = "postgresql://postgres@127.0.0.1:5432"
BACKENDS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new database's URL; dropped (with any connection left to it) afterwards."""
    import psycopg

    name = f"dropkit_test_{secrets.token_hex(6)}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{POSTGRES}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def ledger_target(backend: str, directory: Path) -> Iterator[str]:
    """Where a ledger goes on ``backend``: a file in ``directory``, or a new database."""
    if backend == "sqlite":
        yield str(directory / "hq.db")
        return
    with postgres_database() as url:
        yield url


def kit_messages(db: sqlite3.Connection, after_id: int = 0) -> list[dict[str, Any]]:
    """The kit's ``orders`` messages not relayed yet, exactly as its uplink publishes them."""
    return [json.loads(outbox.with_message_id(row["payload"], row["id"]))
            for row in outbox.pending(db, after_id, 100_000) if row["kind"] != "event"]
