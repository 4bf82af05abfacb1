"""Shared fixtures: a real dropkit daemon in a subprocess, on a free loopback port, and the
broker and HQ of a stall around one.

The processes themselves are :mod:`agent.ops.harness`'s, which ``dropkit drill`` runs too.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from agent.ops.harness import (
    Broker,
    Child,
    Hq,
    SimKit,
    new_order_id,
    running_children,
    write_config,
)
from agent.ops.harness import write_manifest as write_manifest
from tests import needs
from tests.hq_helpers import BACKENDS, ledger_target

_TLS_UNUSED = ssl.create_default_context()
"""The TLS context of every client of a kit: it serves plain HTTP, so none is ever used, but
httpx would build one per client (its CA bundle: tens of ms of CPU each, half a second for
the eight clients of a kill round on a loaded machine)."""


class Kit(SimKit):
    """A ``dropkit sim`` process with its state directory, started and stopped by the test."""

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **{"verify": _TLS_UNUSED, **kwargs})

    def order(self, client: httpx.Client, lines: list[dict[str, Any]],
              order_id: str | None = None, method: str = "cash",
              staff: bool = True) -> httpx.Response:
        """A sale at the till (``staff``), or a customer's reservation."""
        return client.post("/api/orders", json={"order_id": order_id or new_order_id(),
                                                "lines": lines, "payment": {"method": method}},
                           headers=self.staff if staff else None)


SHARED_SCOPES = ("package", "module", "class")


def xdist_group(item: pytest.Item) -> str | None:
    """The group of tests ``item`` runs with on one worker under pytest-xdist, or None: the
    tests of a module that share a module's fixture share its state (a kit the tests fuzz in
    turn, then one test recounts what they sold; a VM module's boots of one disk). A VM module
    goes to one worker whole, as a module's boots follow one another; the builds of the image
    they share take turns under its lock (tests/vm/images.py)."""
    fixtures = item._fixtureinfo.name2fixturedefs.values()
    if item.get_closest_marker("vm") is not None or any(
            defs[-1].scope in SHARED_SCOPES for defs in fixtures):
        return item.nodeid.split("::")[0]
    return None


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup`` (./run-tests), each test of a group is sent to the worker
    that runs the group, one after another.

    pytest-xdist reads the group off the test's id, ``path::name@group``, which it sets by
    assigning ``item._nodeid``; pytest 9.2 keeps the id in ``item._id`` instead, and the
    grouping silently stops (pytest-xdist issue 1386; its proposed fix, pull request 1388, sets
    the structured id the same way). Until a release has it, it is set here, and checked, lest
    the tests of a group run apart unnoticed: the check turns a change of pytest's internals
    into a usage error at collection rather than tests sharing a fixture on two workers."""
    if not config.getoption("loadgroup", default=False):  # set on the workers
        return
    from _pytest.nodeid import NodeId

    for item in items:
        group = xdist_group(item)
        if group is None:
            continue
        item.add_marker(pytest.mark.xdist_group(group))
        grouped = f"{item.nodeid.split('@')[0]}@{group}"
        item._id = NodeId.parse(grouped)  # type: ignore[attr-defined]
        if item.nodeid != grouped:
            raise pytest.UsageError(f"cannot group {item.nodeid} with {group} for pytest-xdist")


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


@pytest.fixture
def mosquitto() -> str:
    """The Mosquitto binary; without it the test is skipped, or fails in CI
    (:mod:`tests.needs`)."""
    return needs.mosquitto()


@dataclass(frozen=True)
class Stall:
    """A stall on the uplink: a Mosquitto and ``dropkit hq`` of the test's own, running, and a
    kit's state directory, manifest and config (on that broker), its kit not yet started."""

    broker: Broker
    hq: Hq
    state: Path
    config: Path

    def start_kit(self) -> SimKit:
        """``dropkit sim`` on the stall's state directory and config."""
        return SimKit(self.state, self.config).start()


class MakeStall(Protocol):
    def __call__(self, kit: Mapping[str, Any], items: list[tuple[str, str, int, int]], *,
                 state: Path | None = None, paper_aside: bool = False,
                 **sections: Mapping[str, Any]) -> Stall: ...


@pytest.fixture
def stall(tmp_path: Path, mosquitto: str) -> Iterator[MakeStall]:
    """Make a :class:`Stall`: ``kit`` is the config's ``[kit]`` (its id first), ``items`` the
    manifest's ``(sku, name, price_cents, qty)``, ``sections`` more of the config (``[mqtt]``
    is the broker's, :meth:`~agent.ops.harness.Broker.kit_mqtt`). ``state`` is the state
    directory (``tmp_path/kit`` by default); with ``paper_aside`` the simulated printer's
    receipt images go to ``tmp_path/paper``, off the kit's disk, as a real printer's paper is.
    HQ and the broker are stopped after the test."""
    made: list[Child] = []

    def make(kit: Mapping[str, Any], items: list[tuple[str, str, int, int]], *,
             state: Path | None = None, paper_aside: bool = False,
             **sections: Mapping[str, Any]) -> Stall:
        broker = Broker(tmp_path / "broker").start()
        made.append(broker)
        hq = Hq(broker, tmp_path / "hq.db").start()
        made.append(hq)
        state = state or tmp_path / "kit"
        state.mkdir(parents=True, exist_ok=True)
        if paper_aside:
            paper = tmp_path / "paper"
            paper.mkdir()
            (state / "printer").symlink_to(paper)
        manifest = write_manifest(tmp_path / "manifest.toml", items)
        config = write_config(tmp_path / "agent.toml", {
            "kit": kit, "orders": {"manifest": str(manifest)}, **sections,
            "mqtt": broker.kit_mqtt(**sections.get("mqtt", {}))})
        return Stall(broker, hq, state, config)

    yield make
    for child in reversed(made):  # HQ, then its broker
        if child.proc is not None:
            child.stop()
