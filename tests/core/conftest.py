from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.sales_helpers import open_db


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """The kit's store on a real SQLite file in ``tmp_path``."""
    connection = open_db(tmp_path / "kit.db")
    yield connection
    connection.close()
