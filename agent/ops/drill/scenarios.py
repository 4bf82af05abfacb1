"""The drills themselves: the field's bad days, each a function of a
:class:`~agent.ops.drill.runner.Session`, in :data:`DRILLS` in the order ``dropkit drill all``
runs them. docs/drills.md describes each drill.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import shlex
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.hq.ledger import Ledger
from agent.ops.drill.diskfull import disk_full
from agent.ops.drill.hostile import hostile_client
from agent.ops.drill.powercut import drain_until_halt, outbox_events, power_cut
from agent.ops.drill.runner import Abort, Drill, Scenario, Session, Skipped
from agent.ops.harness import Answer, Broker, EventStream, Hq, mosquitto_binary, new_order_id

OB_LATENCY_LIMIT_S = 1.0
"""Mains pulled to ``OB`` in /api/health, polled over HTTP (docs/power.md: about 0.2 s)."""
RACERS = 32
LAST_UNITS = 5

DRILLS: dict[str, Drill] = {}
"""The drills by name, in the order ``dropkit drill all`` runs them."""


def drill(name: str, summary: str) -> Callable[[Scenario], Scenario]:
    """Register the decorated scenario in :data:`DRILLS` as ``name``."""
    def register(run: Scenario) -> Scenario:
        DRILLS[name] = Drill(name, summary, run)
        return run
    return register


def _refusal(answer: Answer) -> str:
    data = answer.data if isinstance(answer.data, dict) else {}
    return f"{answer.status} {data.get('error', '')} naming {data.get('sku', 'nothing')}"


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
    drain_until_halt(s, kit, sold)
    ran = calls.read_text().splitlines() if calls.exists() else []
    s.expect(len(ran) == 1, "the shutdown command ran exactly once", f"{len(ran)} time(s)")
    events = [event["type"] for event in outbox_events(kit)]
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
        """The receipt hashes on paper so far (the end of each receipt's QR code, its link
        ``.../r/{kit}/{seq}/{hash}``), in order."""
        return [line.rsplit("/", 1)[-1] for path in sorted(
                    output.glob("receipt-*.txt"), key=lambda p: int(p.stem.split("-")[1]))
                for line in path.read_text().splitlines() if line.startswith("[QR] ")]

    def sell() -> Answer:
        return kit.place([{"sku": "DRILL-TEE", "qty": 1}])

    events = EventStream(kit)
    s.stack.callback(events.close)
    heard, took = s.within(lambda: events.find("health"), 10)  # the stream's first event
    s.require(heard, "the drill hears the kit's events", f"first event after {took:.1f} s"
              if heard else "no event in 10 s")
    sales = [sell()]
    first = sales[0].data.get("order_id") if sales[0].status == 201 else None

    def first_printed() -> bool:
        # On paper, and the kit heard the printer answer after it: the paper pulled before
        # that answer would leave the receipt rightly unsure ("paper_out right after it").
        return len(printed()) == 1 and events.find("print_job", order_id=first,
                                                   state="printed") is not None

    done, took = s.within(first_printed, 10, 0.05)
    s.expect(sales[0].status == 201 and done, "a sale's receipt prints",
             f"{sales[0].status}, {len(printed())} printed after {took:.2f} s")
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
    orders = [answer.data["order_id"] for answer in sales if answer.status == 201]

    def settled(order_id: str) -> bool:
        return any(events.find("print_job", order_id=order_id, state=state)
                   for state in ("printed", "unsure"))

    # Each receipt's send is over and recorded: the queue sends a job only while it is pending,
    # so a receipt printed twice is on paper by now.
    done, took = s.within(lambda: all(settled(order_id) for order_id in orders), 15, 0.05)
    s.require(done, "every receipt's send is over and recorded",
              f"after {took:.1f} s" if done else "not within 15 s")
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
    report = Ledger(hq.db).report()
    s.expect(report == [], "dropkit hq report: no rejection, hold or gap",
             "; ".join(report) or "no mismatches")
    s.check_chain(s.stop_kit())


drill("disk-full", "the kit's disk fills (needs root): orders refused 507, reads go on, "
      "nothing confirmed lost; room again: it carries on by itself")(disk_full)
drill("hostile-client", "one phone floods headers, then holds a thousand half-sent requests: "
      "the kit stays small and another phone's sales go on")(hostile_client)
drill("power-cut", "drained to critical, the kit halts and its HAT cuts the power; mains back: "
      "it boots, READY again, no sale lost")(power_cut)
