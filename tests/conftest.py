"""Shared fixtures: a real dropkit daemon in a subprocess, on a free loopback port.

The processes themselves are :mod:`agent.ops.harness`'s, which ``dropkit drill`` runs too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.ops.harness import SimKit, new_order_id, running_children
from agent.ops.harness import write_manifest as write_manifest
from tests.hq_helpers import BACKENDS, ledger_target


class Kit(SimKit):
    """A ``dropkit sim`` process with its state directory, started and stopped by the test."""

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def order(self, client: httpx.Client, lines: list[dict[str, Any]],
              order_id: str | None = None, method: str = "cash",
              staff: bool = True) -> httpx.Response:
        """A sale at the till (``staff``), or a customer's reservation."""
        return client.post("/api/orders", json={"order_id": order_id or new_order_id(),
                                                "lines": lines, "payment": {"method": method}},
                           headers=self.staff if staff else None)


@pytest.fixture(autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """Brokers, HQs and kits a test started are gone after it, even when it failed (those of
    wider-scoped fixtures, started before it, are theirs to stop)."""
    before = set(running_children())
    yield
    for child in running_children():
        if child not in before:
            child.kill()


@pytest.fixture
def kit_factory(tmp_path: Path) -> Iterator[Any]:
    kits: list[Kit] = []

    def make(state_dir: Path | None = None, config: Path | None = None) -> Kit:
        kit = Kit(state_dir or tmp_path / f"state{len(kits)}", config)
        kits.append(kit)
        return kit.start()

    yield make
    for kit in kits:
        kit.kill()


@pytest.fixture
def kit(kit_factory: Any) -> Kit:
    """A running ``dropkit sim`` on the demo manifest."""
    return kit_factory()


@pytest.fixture(params=BACKENDS)
def hq_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """HQ's ledger for the test: a SQLite file, then a PostgreSQL database of its own (each HQ
    test runs on both)."""
    with ledger_target(request.param, tmp_path) as target:
        yield target
