"""The drills' runner: a drill's :class:`Session` (its kit, its checks), its :class:`Timeline`
and its verdict, for the drills of :mod:`agent.ops.drill.scenarios`.

A drill is a function of a :class:`Session`: it starts the real daemon (``dropkit sim`` in a
subprocess, on a free loopback port, with its state in a directory of its own) with
:meth:`Session.start_kit`, drives it only as the field would, and checks what it sees with
:meth:`Session.expect` and :meth:`Session.require`. :func:`run_one` prints the timeline as it
goes, then ``PASS``, ``FAIL`` with the reasons, or ``SKIP``.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from agent.ops.harness import Answer, SimKit, poll, write_config, write_manifest

T = TypeVar("T")

PASSED, FAILED, SKIPPED = 0, 1, 3
"""Exit statuses: every drill passed; one failed; one could not run here and none failed. (2 is
the CLI's: a wrong name, config or directory.)"""

MANIFEST = [("DRILL-TEE", "Drill tee", 2500, 100), ("DRILL-PIN", "Enamel pin", 600, 3),
            ("DRILL-LAST", "Last vinyl", 3000, 12)]
"""What every drill's kit sells: plenty, a few, and a dozen for the last-units race."""
KIT_DEFAULTS = {"kit": {"id": "kit-drill", "name": "Drill kit"}}


class DrillError(ValueError):
    """The drill cannot start as asked (a wrong name, a used directory); one line."""


class Abort(Exception):
    """An expectation the rest of the drill builds on did not hold: the drill ends there."""


class Skipped(Exception):
    """What the drill needs is not on this machine."""


class Timeline:
    """The drill's lines as they happen: seconds since the start, a mark, what and what seen."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.started = time.monotonic()
        self.checks = 0
        self.failures: list[str] = []

    def _line(self, mark: str, text: str) -> None:
        print(f"{time.monotonic() - self.started:8.2f}s  {mark:<4}  {text}", file=self.out,
              flush=True)

    def note(self, happened: str, observed: str = "") -> None:
        """Something the drill did, and what the kit answered."""
        self._line("", f"{happened}: {observed}" if observed else happened)

    def check(self, ok: bool, expectation: str, observed: str) -> bool:
        self.checks += 1
        self._line("ok" if ok else "FAIL", f"{expectation}: {observed}")
        if not ok:
            self.failures.append(f"{expectation} (saw: {observed})")
        return ok


@dataclass
class Session:
    """One drill run: its directory, its timeline, and the processes it started."""

    workdir: Path
    timeline: Timeline
    base_config: dict[str, dict[str, Any]]
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    kit: SimKit | None = None

    def note(self, happened: str, observed: str = "") -> None:
        self.timeline.note(happened, observed)

    def expect(self, ok: object, expectation: str, observed: str) -> bool:
        """Check ``ok`` (any truth value); the drill goes on either way."""
        return self.timeline.check(bool(ok), expectation, observed)

    def require(self, ok: object, expectation: str, observed: str) -> None:
        """Check ``ok``; the drill ends here when it does not hold."""
        if not self.expect(ok, expectation, observed):
            raise Abort(expectation)

    def within(self, predicate: Callable[[], T], timeout: float, interval: float = 0.02,
               since: float | None = None) -> tuple[T | None, float]:
        """``predicate``'s first true value within ``timeout`` s (else None), and the seconds
        it took (from ``since``, a ``time.monotonic()``, when given)."""
        started = time.monotonic() if since is None else since
        value = poll(predicate, timeout, interval)
        return value, time.monotonic() - started

    def start_kit(self, **sections: dict[str, Any]) -> SimKit:
        """``dropkit sim`` on the drill's manifest: the host's config (``--config``) under the
        drill's own ``sections``."""
        manifest = write_manifest(self.workdir / "manifest.toml", MANIFEST, version="drill-1")
        config: dict[str, dict[str, Any]] = {}
        for layer in (KIT_DEFAULTS, self.base_config, {"orders": {"manifest": str(manifest)}},
                      sections):
            for name, values in layer.items():
                config[name] = {**config.get(name, {}), **values}
        kit = SimKit(self.workdir / "kit", write_config(self.workdir / "agent.toml", config))
        self.stack.callback(self._stop_kit, kit)
        self.kit = kit.start()
        self.note("start dropkit sim", f"kit {kit.health()['kit_id']} at {kit.url}")
        return kit

    def _stop_kit(self, kit: SimKit) -> None:
        try:
            kit.stop()
        except subprocess.TimeoutExpired:  # it must not outlive the drill
            kit.kill()
        (self.workdir / "kit.log").write_text("".join(kit.log))

    def stop_kit(self) -> SimKit:
        """SIGTERM the kit and wait for its orderly stop, to read its store afterwards."""
        assert self.kit is not None
        code = self.kit.stop()
        self.note("stop the kit (SIGTERM)", f"exit status {code}")
        return self.kit

    def check_chain(self, kit: SimKit) -> list[sqlite3.Row]:
        """Verify the stopped kit's receipt chain, as ``dropkit receipts verify`` does; its
        links ``(seq, kind, order_id)``."""
        from agent.core import receipts
        from agent.core.orders import sale_matches_order

        with contextlib.closing(kit.open_store()) as db:
            report = receipts.verify(db, sale_matches_order)
            links = db.execute("SELECT seq, kind, order_id FROM receipts ORDER BY seq").fetchall()
        self.expect(report.ok, "the receipt chain verifies",
                    f"{report.links} links OK" if report.ok else
                    f"broken at #{report.broken_seq}: {report.reason}")
        return links

    def sim(self, device: str, **body: Any) -> dict[str, Any]:
        """A simulator control of the staff page (``POST /api/staff/sim/<device>``)."""
        answer = self._kit.request("POST", f"/api/staff/sim/{device}", body, staff=True)
        if answer.status != 200:
            self.require(False, f"the simulator takes {device} {body}",
                         f"{answer.status} {answer.data}")
        return answer.data

    def staff(self, path: str, body: Any = None) -> Answer:
        return self._kit.request("POST", path, body, staff=True)

    def item(self, sku: str) -> dict[str, Any]:
        items = self._kit.request("GET", "/api/manifest").data["items"]
        return next(item for item in items if item["sku"] == sku)

    @property
    def _kit(self) -> SimKit:
        assert self.kit is not None, "start_kit first"
        return self.kit


Scenario = Callable[[Session], None]


@dataclass(frozen=True)
class Drill:
    """A drill: its name, what it rehearses (one line), and the scenario that runs it."""

    name: str
    summary: str
    run: Scenario


def list_drills(drills: Mapping[str, Drill], out: TextIO) -> int:
    """One line per drill: its name and what it rehearses."""
    width = max(map(len, drills))
    for item in drills.values():
        print(f"{item.name:<{width}}  {item.summary}", file=out)
    print(f"{'all':<{width}}  each of them in turn", file=out)
    return PASSED


def base_config(path: Path | None) -> dict[str, dict[str, Any]]:
    """The host's config (checked as the daemon checks it) for the drills' kits, without its
    ``[mqtt]``: a drill never talks to the co-op's broker."""
    if path is None:
        return {}
    from agent.config import load_config

    load_config(path)
    data = tomllib.loads(path.read_text())
    data.pop("mqtt", None)
    return data


def run_one(item: Drill, workdir: Path, config: dict[str, dict[str, Any]],
            out: TextIO) -> int:
    """One drill: its timeline and verdict on ``out``; its exit status."""
    print(f"drill {item.name}: {item.summary}", file=out, flush=True)
    workdir.mkdir(parents=True)
    timeline = Timeline(out)
    session = Session(workdir, timeline, config)
    stopped = ""
    try:
        with session.stack:
            item.run(session)
    except Skipped as exc:
        print(f"SKIP  {item.name}: {exc}", file=out, flush=True)
        return SKIPPED
    except Abort:
        stopped = " (the drill stopped there)"
    except Exception as exc:  # the kit died or answered nonsense: a verdict, not a traceback
        (workdir / "traceback.txt").write_text(traceback.format_exc())
        first_line = (str(exc).splitlines() or [""])[0]
        timeline.failures.append(f"the drill broke off: {type(exc).__name__}: {first_line} "
                                 f"(see kit.log and traceback.txt in {workdir})")
    took = time.monotonic() - timeline.started
    if timeline.failures:
        print(f"FAIL  {item.name}: {'; '.join(timeline.failures)}{stopped}", file=out,
              flush=True)
        return FAILED
    print(f"PASS  {item.name}: {timeline.checks} checks held in {took:.1f} s", file=out,
          flush=True)
    return PASSED


def run_drills(drills: Mapping[str, Drill], name: str, *, state_dir: Path | None = None,
               keep: bool = False, config: Path | None = None, out: TextIO) -> int:
    """Run the drill ``name`` of ``drills`` (or ``all``); the exit status (:data:`PASSED`,
    ...)."""
    if name != "all" and name not in drills:
        raise DrillError(f"no drill {name!r}; expected one of {', '.join(drills)} or all "
                         f"(dropkit drill --list)")
    chosen = list(drills.values()) if name == "all" else [drills[name]]
    base = base_config(config)
    for item in chosen:
        if state_dir is not None and (state_dir / item.name).exists():
            raise DrillError(f"{state_dir / item.name} exists: give a --state-dir without "
                             f"an earlier run of {item.name}")
    root = state_dir or Path(tempfile.mkdtemp(prefix="dropkit-drill-"))
    results: dict[str, int] = {}
    for item in chosen:
        if results:
            print(file=out)
        results[item.name] = run_one(item, root / item.name, base, out)
    if len(chosen) > 1:
        words = {PASSED: "passed", FAILED: "failed", SKIPPED: "skipped"}
        print("\ndrills: " + ", ".join(
            f"{list(results.values()).count(code)} {word}" for code, word in words.items())
            + "".join(f"; {drilled} {words[code]}" for drilled, code in results.items()
                      if code != PASSED), file=out)
    status = FAILED if FAILED in results.values() else \
        SKIPPED if SKIPPED in results.values() else PASSED
    if state_dir is None and not keep and status != FAILED:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"state, logs and receipts kept in {root}", file=out)
    return status
