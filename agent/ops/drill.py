"""``dropkit drill``: the field's bad days, rehearsed on the simulators, with a timeline and a
verdict.

Each drill starts the real daemon (``dropkit sim`` in a subprocess, on a free loopback port,
with its state in a directory of its own), drives it only as the field would (the HTTP API, the
staff calls and the staff page's simulator controls, with the staff token), and says what it
did and saw, second by second, then ``PASS`` or ``FAIL`` with the reasons. Afterwards it reads
the kit's store for what only the store can show (the receipt chain, the outbox), as
``dropkit receipts verify`` would. docs/drills.md describes each drill.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import shlex
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
import tomllib
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from agent.ops.harness import (
    Answer,
    Broker,
    EventStream,
    Hq,
    SimKit,
    mosquitto_binary,
    new_order_id,
    poll,
    write_config,
    write_manifest,
)

T = TypeVar("T")

PASSED, FAILED, SKIPPED = 0, 1, 3
"""Exit statuses: every drill passed; one failed; one could not run here and none failed. (2 is
the CLI's: a wrong name, config or directory.)"""

MANIFEST = [("DRILL-TEE", "Drill tee", 2500, 100), ("DRILL-PIN", "Enamel pin", 600, 3),
            ("DRILL-LAST", "Last vinyl", 3000, 12)]
"""What every drill's kit sells: plenty, a few, and a dozen for the last-units race."""
KIT_DEFAULTS = {"kit": {"id": "kit-drill", "name": "Drill kit"}}
OB_LATENCY_LIMIT_S = 1.0
"""Mains pulled to ``OB`` in /api/health, polled over HTTP (docs/power.md: about 0.2 s)."""
RACERS = 32
LAST_UNITS = 5


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
    name: str
    summary: str
    run: Scenario


DRILLS: dict[str, Drill] = {}
"""The drills by name, in the order ``dropkit drill all`` runs them."""


def drill(name: str, summary: str) -> Callable[[Scenario], Scenario]:
    def register(run: Scenario) -> Scenario:
        DRILLS[name] = Drill(name, summary, run)
        return run
    return register


def _refusal(answer: Answer) -> str:
    data = answer.data if isinstance(answer.data, dict) else {}
    return f"{answer.status} {data.get('error', '')} naming {data.get('sku', 'nothing')}"


# -- the drills ----------------------------------------------------------------------------


@drill("payment-failure", "a card payment fails; staff void it: stock back at once, the void "
       "in the receipt chain")
def payment_failure(s: Session) -> None:
    kit, sku = s.start_kit(), "DRILL-PIN"
    stock = s.item(sku)["available"]
    card = kit.place([{"sku": sku, "qty": 2}], method="card")
    payment = card.data.get("payment", {}).get("status") if card.status == 201 else None
    s.require(payment == "pending", f"a card sale of 2 x {sku} is taken, payment pending",
              f"{card.status}, payment {payment}")
    order_id = card.data["order_id"]
    s.expect(s.item(sku)["available"] == stock - 2, "the 2 are held while the terminal works",
             f"{s.item(sku)['available']} of {stock} left")
    other = kit.place([{"sku": sku, "qty": 2}])
    s.expect(other.status == 409 and other.data.get("sku") == sku,
             "another customer cannot buy them meanwhile", _refusal(other))
    declined = s.staff(f"/api/staff/orders/{order_id}/payment", {"result": "failed"})
    s.note("staff: the terminal declined the card",
           f"{declined.status}, payment {declined.data.get('payment', {}).get('status')}")
    void = s.staff(f"/api/staff/orders/{order_id}/void", {"reason": "card declined (drill)"})
    s.require(void.status == 200 and void.data.get("status") == "voided",
              "staff void the sale", f"{void.status}, order {void.data.get('status')}")
    s.expect(s.item(sku)["available"] == stock, "its stock is on sale again at once",
             f"{s.item(sku)['available']} of {stock} left")
    again = s.staff(f"/api/staff/orders/{order_id}/void")
    s.expect(again.status == 409 and s.item(sku)["available"] == stock,
             "a second void is refused and returns nothing twice",
             f"{again.status} {again.data.get('error')}, {s.item(sku)['available']} left")
    cash = kit.place([{"sku": sku, "qty": 2}])
    s.expect(cash.status == 201, "the next customer buys the 2", f"{cash.status}")
    links = s.check_chain(s.stop_kit())
    voids = [link["seq"] for link in links
             if link["kind"] == "void" and link["order_id"] == order_id]
    chain = ", ".join(f"#{link['seq']} {link['kind']}" for link in links)
    s.expect(len(voids) == 1, "the void is a link of the receipt chain", f"links {chain}")
    with contextlib.closing(kit.open_store()) as db:
        kinds = [row[0] for row in db.execute("SELECT kind FROM outbox WHERE key = ? "
                                              "ORDER BY id", (order_id,))]
    s.expect(kinds == ["sale", "void"], "the sale and its void wait in the outbox for HQ",
             f"{', '.join(kinds)}")


@drill("power-loss", "mains pulled (OB) and back (OL), then a drain to critical: one clean "
       "shutdown")
def power_loss(s: Session) -> None:
    calls = s.workdir / "shutdown-calls"
    recorder = f"echo poweroff >> {shlex.quote(str(calls))}"
    kit = s.start_kit(power={"shutdown_delay_s": 2.0,
                             "shutdown_command": f"/bin/sh -c {shlex.quote(recorder)}"})

    def power() -> dict[str, Any]:
        return kit.health()["power"]

    def power_with(flag: str) -> Callable[[], dict[str, Any] | None]:
        """One request per poll: the power state once it carries ``flag``."""
        def reached() -> dict[str, Any] | None:
            now = power()
            return now if flag in now["state"].split() else None
        return reached

    known, _ = s.within(lambda: power()["state"] != "unknown" and power(), 10)
    s.require(known and "OL" in known["state"].split(), "the kit starts on mains",
              f"power {known['state'] if known else 'unknown after 10 s'}")
    pulled = time.monotonic()
    s.sim("power", action="pull_mains")
    s.note("pull the mains")
    on_battery, took = s.within(power_with("OB"), 5, since=pulled)
    s.expect(on_battery and took <= OB_LATENCY_LIMIT_S,
             f"the kit sees it is on battery within {OB_LATENCY_LIMIT_S:g} s",
             f"{on_battery['state']}, feeding {on_battery['feeding']}, {took:.2f} s after "
             "the pull" if on_battery else f"still {power()['state']} after 5 s")
    if not on_battery:
        raise Abort("on battery")
    sold = [kit.place([{"sku": "DRILL-TEE", "qty": 1}])]
    s.expect(sold[0].status == 201, "a sale on battery is taken", f"{sold[0].status}")
    restored = time.monotonic()
    s.sim("power", action="restore_mains")
    s.note("mains back")
    on_line, took = s.within(power_with("OL"), 5, since=restored)
    s.require(on_line, "the kit is on line again",
              f"{on_line['state']}, feeding {on_line['feeding']}, {took:.2f} s after"
              if on_line else f"still {power()['state']} after 5 s")
    rig = s.sim("power", action="scenario", name="drain_to_critical", speed=60)
    s.note("scenario drain_to_critical at 60x", f"mains lost at rig 5 s, battery "
           f"{rig['battery_percent']:g} %, load {rig['load_amps']:g} A")
    pending, _ = s.within(lambda: power()["shutdown_in_s"] is not None and power(), 60, 0.05)
    s.require(pending, "the battery reaches critical: the shutdown countdown starts",
              f"{pending['state']}, battery {pending['ups']['percent']} %, "
              f"{pending['ups']['minutes_left']} min left, shutdown in "
              f"{pending['shutdown_in_s']} s" if pending else "no countdown within 60 s")

    before = len(sold)

    def refused() -> str | None:
        try:
            answer = kit.place([{"sku": "DRILL-TEE", "qty": 1}])
        except (OSError, http.client.HTTPException):
            return "the kit is already gone"
        if answer.status == 201:
            sold.append(answer)  # still in the countdown: a sale like any other
            return None
        return f"{answer.status} {answer.data.get('error')}"

    refusal, _ = s.within(refused, 30, 0.1)
    s.expect(refusal is not None and refusal.startswith(("503 shutting_down", "the kit")),
             "sales go on in the countdown, then orders are refused",
             f"{len(sold) - before} sold, then {refusal}")
    assert kit.proc is not None
    try:
        code: int | None = kit.proc.wait(30)
    except subprocess.TimeoutExpired:
        code = None
    s.require(code == 0, "the daemon finishes the sequence and exits", f"exit status {code}")
    ran = calls.read_text().splitlines() if calls.exists() else []
    s.expect(len(ran) == 1, "the shutdown command ran exactly once", f"{len(ran)} time(s)")
    with contextlib.closing(kit.open_store()) as db:
        events = [row[0] for row in db.execute(
            "SELECT json_extract(payload, '$.event.type') FROM outbox WHERE kind = 'event' "
            "ORDER BY id")]
    s.expect(events.count("shutdown") == 1 and "shutdown_pending" in events,
             "remote ops get the countdown and one shutdown event (outbox)",
             f"{events.count('shutdown_pending')} shutdown_pending, "
             f"{events.count('shutdown')} shutdown")
    sold_ids = {answer.data["order_id"] for answer in sold if answer.status == 201}
    links = s.check_chain(kit)
    s.expect(sold_ids <= {link["order_id"] for link in links},
             "every sale answered 201 is in the store", f"{len(sold_ids)} sold, "
             f"{len(sold_ids - {link['order_id'] for link in links})} missing")


@drill("double-sold", f"{RACERS} clients race for the last {LAST_UNITS} units: exactly "
       f"{LAST_UNITS} sold, the rest 409, stock never below 0")
def double_sold(s: Session) -> None:
    kit, sku = s.start_kit(), "DRILL-LAST"
    allocated = s.item(sku)["allocated"]
    first = kit.place([{"sku": sku, "qty": allocated - LAST_UNITS}])
    s.require(first.status == 201 and s.item(sku)["available"] == LAST_UNITS,
              f"sell all but the last {LAST_UNITS} of {sku}",
              f"{first.status}, {s.item(sku)['available']} left")
    racing = threading.Event()
    racing.set()
    lowest = [LAST_UNITS]

    def watch_stock() -> None:
        while racing.is_set():
            lowest[0] = min(lowest[0], s.item(sku)["available"])
            time.sleep(0.005)

    barrier = threading.Barrier(RACERS)

    def buy(order_id: str) -> Answer:
        barrier.wait(10)
        return kit.place([{"sku": sku, "qty": 1}], order_id)

    ids = [new_order_id() for _ in range(RACERS)]
    watcher = threading.Thread(target=watch_stock, daemon=True)
    watcher.start()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(RACERS) as pool:
        answers = dict(zip(ids, pool.map(buy, ids), strict=True))
    took = time.monotonic() - started
    racing.clear()
    watcher.join()
    won = [order_id for order_id, answer in answers.items() if answer.status == 201]
    refusals = [answer for answer in answers.values() if answer.status != 201]
    s.note(f"{RACERS} clients at once, 1 x {sku} each", f"answered in {took:.2f} s")
    s.expect(len(won) == LAST_UNITS, f"exactly the last {LAST_UNITS} are sold",
             f"{len(won)} x 201")
    named = [answer for answer in refusals
             if answer.status == 409 and answer.data.get("error") == "sold_out"
             and answer.data.get("sku") == sku]
    s.expect(len(named) == len(refusals) == RACERS - LAST_UNITS,
             "every other client gets 409 sold_out naming the SKU",
             ", ".join(sorted({_refusal(answer) for answer in refusals})) +
             f" x {len(refusals)}")
    after = s.item(sku)
    s.expect(lowest[0] >= 0 and after["available"] == 0 and after["sold"] == allocated,
             "stock never goes below zero",
             f"lowest seen {lowest[0]} during the race; now {after['available']} left, "
             f"{after['sold']} of {allocated} sold")
    with concurrent.futures.ThreadPoolExecutor(RACERS) as pool:
        retried = dict(zip(ids, pool.map(
            lambda order_id: kit.place([{"sku": sku, "qty": 1}], order_id), ids), strict=True))
    same = [order_id for order_id in won if retried[order_id].status == 200 and
            retried[order_id].data["receipt"] == answers[order_id].data["receipt"]]
    still_refused = [order_id for order_id in ids if order_id not in won
                     and retried[order_id].status == 409]
    s.expect(len(same) == len(won) and len(still_refused) == RACERS - len(won)
             and s.item(sku)["sold"] == allocated,
             "every client retries: winners get their first sale back, nothing sells twice",
             f"{len(same)} x 200 with the same receipt, {len(still_refused)} x 409, "
             f"{s.item(sku)['sold']} sold")
    links = s.check_chain(s.stop_kit())
    s.expect(len(links) == 1 + len(won), "one receipt link per sale",
             f"{len(links)} links for {1 + len(won)} sales")


@drill("paper-out", "paper runs out between receipts: sales go on, receipts wait, staff "
       "alerted; paper back: each prints once")
def paper_out(s: Session) -> None:
    kit = s.start_kit()

    def printer() -> dict[str, Any]:
        return kit.health()["devices"]["printer"]

    def mode_led() -> str | None:
        return kit.health()["devices"]["panel"].get("leds", {}).get("mode")

    answered, _ = s.within(lambda: printer()["state"] != "unknown" and printer(), 10)
    s.require(answered and answered["state"] == "ready", "the printer answers, ready",
              f"printer {answered['state'] if answered else 'unknown after 10 s'}")
    output = Path(s.sim("paper", level="ok")["printer"]["output_dir"])

    def printed() -> list[str]:
        """The receipt hashes on paper so far (the QR code of each receipt), in order."""
        return [line[len("[QR] "):] for path in sorted(output.glob("receipt-*.txt"),
                                                       key=lambda p: int(p.stem.split("-")[1]))
                for line in path.read_text().splitlines() if line.startswith("[QR] ")]

    def sell() -> Answer:
        return kit.place([{"sku": "DRILL-TEE", "qty": 1}])

    sales = [sell()]
    done, took = s.within(lambda: len(printed()) == 1, 10, 0.05)
    s.expect(sales[0].status == 201 and done, "a sale's receipt prints",
             f"{sales[0].status}, {len(printed())} printed after {took:.2f} s")
    events = EventStream(kit)
    s.stack.callback(events.close)
    s.sim("paper", level="out")
    s.note("the printer runs out of paper")
    sales += [sell() for _ in range(3)]
    s.expect(all(answer.status == 201 for answer in sales[1:]), "three more sales are taken",
             ", ".join(str(answer.status) for answer in sales[1:]))
    alert, took = s.within(lambda: events.find("alert", type="paper_out"), 10)
    s.expect(alert, "staff see a paper_out alert on the staff page",
             f"{took:.2f} s after the sales" if alert else "none within 10 s")
    s.within(lambda: mode_led() == "blink_fast", 3)
    s.expect(mode_led() == "blink_fast", "the panel's mode LED blinks fast",
             f"printer {printer()['state']}, mode LED {mode_led()}")
    time.sleep(1.5)  # the queue tries again meanwhile
    s.expect(len(printed()) == 1, "the receipts wait: nothing prints without paper",
             f"{len(printed()) - 1} more printed")
    s.sim("paper", level="ok")
    s.note("paper back in")
    hashes = [answer.data["receipt"]["hash"] for answer in sales if answer.status == 201]
    done, took = s.within(lambda: len(printed()) >= len(hashes), 15, 0.05)
    s.expect(done, "the waiting receipts print with nobody touching anything",
             f"{len(printed())} of {len(hashes)} printed {took:.2f} s after")
    time.sleep(1.0)  # a receipt printed twice would show by now
    copies = [printed().count(receipt) for receipt in hashes]
    s.expect(printed() == hashes, "each receipt printed once, in order of sale",
             f"{len(printed())} receipts, copies per sale {copies}")
    unsure = kit.request("GET", "/api/staff/print-jobs", staff=True).data["unsure"]
    s.expect(events.find("printer_ready") is not None and unsure == [],
             "the printer is ready again, no receipt left unsure",
             f"printer {printer()['state']}, {len(unsure)} unsure")
    s.check_chain(s.stop_kit())


@drill("broker-outage", "broker down (needs mosquitto): offline at once, sales queue; back: "
       "HQ gets each once, online")
def broker_outage(s: Session) -> None:
    if mosquitto_binary() is None:
        raise Skipped("needs a mosquitto binary (Debian: apt install mosquitto); none on "
                      "PATH or in /usr/sbin")
    broker = Broker(s.workdir / "broker", persistence=True).start()
    s.stack.callback(broker.stop)
    s.note("start mosquitto", broker.url)
    hq = Hq(broker, s.workdir / "hq.db").start()
    s.stack.callback(hq.stop)
    s.note("start dropkit hq", "connected")
    kit = s.start_kit(mqtt=broker.kit_mqtt(ack_window_s=3))

    def mode(state: str) -> Callable[[], dict[str, Any] | None]:
        def reached() -> dict[str, Any] | None:
            now = kit.health()
            return now if now["mode"] == state else None
        return reached

    online, _ = s.within(mode("online"), 15, 0.05)
    s.require(online, "the kit connects and is online",
              f"uplink {kit.health()['uplink']['state']}, mode {kit.health()['mode']}")

    def status(order_id: str) -> str:
        return kit.request("GET", f"/api/orders/{order_id}").data["status"]

    first = kit.place([{"sku": "DRILL-TEE", "qty": 1}])
    ids = [first.data["order_id"]]
    settled, _ = s.within(lambda: status(ids[0]) == "reconciled", 10, 0.05)
    s.expect(settled, "a sale online is reconciled by HQ",
             f"{first.status} {first.data['status']}; now {status(ids[0])}")
    stopped = time.monotonic()
    broker.stop()
    s.note("stop the broker")
    offline, took = s.within(mode("offline"), 10, since=stopped)
    s.require(offline, "the kit goes offline at once",
              f"mode offline ({', '.join(offline['mode_reasons'])}) {took:.2f} s after"
              if offline else f"mode {kit.health()['mode']} after 10 s")
    answers = [kit.place([{"sku": "DRILL-TEE", "qty": 1}]) for _ in range(10)]
    ids += [answer.data["order_id"] for answer in answers if answer.status == 201]
    s.expect(all(answer.status == 201 and answer.data["status"] == "queued"
                 for answer in answers), "ten sales offline are taken and queued",
             f"{sum(answer.status == 201 for answer in answers)} x 201, queue depth "
             f"{kit.health()['queue_depth']}")
    back = time.monotonic()
    broker.start()
    s.note("start the broker again", "same port, its persistence kept")
    drained, took = s.within(lambda: kit.health()["queue_depth"] == 0, 30, 0.05, since=back)
    s.expect(drained, "the queue drains", f"depth {kit.health()['queue_depth']} after {took:.2f} s")
    settled, took = s.within(lambda: all(status(i) == "reconciled" for i in ids), 30, 0.1,
                             since=back)
    s.expect(settled, "HQ acks every sale: all reconciled on the kit",
             f"{sum(status(i) == 'reconciled' for i in ids)} of {len(ids)} after {took:.2f} s")
    online, took = s.within(mode("online"), 15, 0.05, since=back)
    s.expect(online, "the kit is online again",
             f"mode {kit.health()['mode']} {took:.2f} s after the broker came back")
    hq.stop()
    recorded = dict(hq.query("SELECT order_id, count(*) FROM sales GROUP BY order_id"))
    s.expect(set(recorded) == set(ids) and set(recorded.values()) == {1},
             "HQ's ledger holds each sale exactly once",
             f"{len(recorded)} sales for {len(ids)} sold, most copies of one: "
             f"{max(recorded.values(), default=0)}")
    from agent.hq import Ledger

    report = Ledger(hq.db).report()
    s.expect(report == [], "dropkit hq report: no rejection, hold or gap",
             "; ".join(report) or "no mismatches")
    s.check_chain(s.stop_kit())


# -- running them ---------------------------------------------------------------------------


def list_drills(out: TextIO) -> int:
    width = max(map(len, DRILLS))
    for item in DRILLS.values():
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


def run_drills(name: str, *, state_dir: Path | None = None, keep: bool = False,
               config: Path | None = None, out: TextIO) -> int:
    """Run the drill ``name`` (or ``all``); the exit status (:data:`PASSED`, ...)."""
    if name != "all" and name not in DRILLS:
        raise DrillError(f"no drill {name!r}; expected one of {', '.join(DRILLS)} or all "
                         f"(dropkit drill --list)")
    chosen = list(DRILLS.values()) if name == "all" else [DRILLS[name]]
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
