"""The ``power-cut`` drill: drained to critical on battery, the kit halts, its HAT cuts the power
(the killpower step, run by the systemd-shutdown hook against the simulated HAT), mains comes
back, the HAT powers the kit again and it starts as systemd would at boot, READY again with
every sale it answered. Also the drain that the ``power-loss`` drill shares. docs/drills.md
describes both.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.ops.drill.runner import Session, Skipped
from agent.ops.harness import Answer, SimKit
from agent.power.killpower import flag_path
from agent.power.service import RIG_FILE_NAME

INSTALLED_HOOK = Path("/usr/lib/systemd/system-shutdown/dropkit-killpower")
HOOK_TIMEOUT_S = 60
READY_TIMEOUT_S = 60
"""From the start after the cut to READY: the start, then mains steady for mains_stable_s."""


def shutdown_hook() -> Path:
    """The systemd-shutdown hook: the checkout's (image/files), else the kit's installed one."""
    import agent

    for hook in (Path(agent.__file__).resolve().parents[1] / "image" / "files"
                 / "dropkit-killpower", INSTALLED_HOOK):
        if hook.is_file():
            return hook
    raise Skipped(f"needs the killpower hook: image/files/dropkit-killpower of a checkout, or "
                  f"{INSTALLED_HOOK}")


def drain_until_halt(s: Session, kit: SimKit, sold: list[Answer]) -> None:
    """The rig's ``drain_to_critical`` at 10x: the countdown, sales until orders are refused
    (each answered 201 added to ``sold``), and the daemon's exit after its shutdown."""
    def power() -> dict[str, Any]:
        return kit.health()["power"]

    rig = s.sim("power", action="scenario", name="drain_to_critical", speed=10)
    s.note("scenario drain_to_critical at 10x", f"mains lost at rig 5 s, battery "
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


def outbox_events(kit: SimKit) -> list[dict[str, Any]]:
    """The power events the stopped kit recorded for remote ops: type and reason."""
    with contextlib.closing(kit.open_store()) as db:
        return [{"type": kind, "reason": reason} for kind, reason in db.execute(
            "SELECT json_extract(payload, '$.event.type'), json_extract(payload, "
            "'$.event.reason') FROM outbox WHERE kind = 'event' ORDER BY id")]


def power_cut(s: Session) -> None:
    hook = shutdown_hook()
    state = s.workdir / "kit"
    rig_file, calls = state / RIG_FILE_NAME, s.workdir / "shutdown-calls"
    recorder = f"echo poweroff >> {shlex.quote(str(calls))}"
    hat_command = [sys.executable, "-m", "simulators.power_hat", str(rig_file), "killpower"]
    kit = s.start_kit(kit={"state_dir": str(state)},
                      power={"shutdown_delay_s": 2.0,
                             "shutdown_command": f"/bin/sh -c {shlex.quote(recorder)}",
                             "killpower_command": shlex.join(hat_command)})
    known, _ = s.within(lambda: kit.health()["power"]["state"] != "unknown" and kit.health(), 10)
    s.require(known and "OL" in known["power"]["state"].split(), "the kit starts on mains",
              f"power {known['power']['state'] if known else 'unknown after 10 s'}")
    sold = [kit.place([{"sku": "DRILL-TEE", "qty": 1}]) for _ in range(3)]
    s.expect(all(answer.status == 201 for answer in sold), "three sales on mains are taken",
             ", ".join(str(answer.status) for answer in sold))
    drain_until_halt(s, kit, sold)
    flag = flag_path(state)
    left = flag.read_text().strip() if flag.exists() else "no flag"
    s.require(" OB" in left, "its last step leaves the killpower flag: a halt for power",
              left)
    ran = calls.read_text().splitlines() if calls.exists() else []
    s.expect(len(ran) == 1, "the shutdown command ran exactly once", f"{len(ran)} time(s)")

    from simulators.power_hat import SimulatedHat

    hat = SimulatedHat(rig_file)
    halted = subprocess.run([sys.executable, str(hook), "poweroff"], capture_output=True,
                            text=True, timeout=HOOK_TIMEOUT_S, stdin=subprocess.DEVNULL,
                            env={**os.environ, "DROPKIT_CONFIG": str(s.workdir / "agent.toml")})
    said = " ".join((halted.stdout + halted.stderr).split())
    s.require(halted.returncode == 0 and not hat.powered,
              "the halt's shutdown hook runs killpower: the HAT cuts the kit's power",
              f"exit {halted.returncode}: {said}")
    rig = hat.rig()
    mains = "present" if rig["mains_present"] else "absent"
    s.note("the kit is dark", f"HAT output cut, mains {mains}, the pack at "
           f"{rig['battery_percent']:g} %")
    s.require(hat.set_mains(True), "mains back: the HAT powers the kit again (auto power-on)",
              f"{hat.state()['power_ons']} power-on(s)")
    since, booted = len(kit.log), time.monotonic()
    kit.start()
    s.note("systemd starts the kit at boot", kit.url)
    said = "".join(kit.log[since:])
    back = "the kit is back on after a halt for power" in said
    s.expect(back and not flag.exists(), "the new start clears the killpower flag",
             "flag removed, logged" if back and not flag.exists() else f"flag {flag.exists()}")
    s.expect("no orders until power is safe again" in said,
             "it finds its shutdown intent: no orders until power is safe",
             "logged" if "power is safe again" in said else "not in its log")

    def ready() -> dict[str, Any] | None:
        health = kit.health()
        return health if health["status"] == "ready" else None

    up, took = s.within(ready, READY_TIMEOUT_S, 0.1, since=booted)
    s.require(up, "READY again once mains is steady",
              f"{up['power']['state']}, battery {up['power']['ups']['percent']} %, {took:.1f} s "
              "after the start" if up else f"status {kit.health()['status']}")
    _no_sale_lost(s, kit, sold)


def _no_sale_lost(s: Session, kit: SimKit, sold: list[Answer]) -> None:
    """Every sale answered 201 before the cut is there after it, and the kit sells again."""
    ids = [answer.data["order_id"] for answer in sold if answer.status == 201]
    looked_up = [kit.request("GET", f"/api/orders/{order_id}").status for order_id in ids]
    s.expect(looked_up == [200] * len(ids), "every sale answered 201 before the cut is there",
             f"{looked_up.count(200)} of {len(ids)} found")
    after = kit.place([{"sku": "DRILL-TEE", "qty": 1}])
    s.expect(after.status == 201, "a sale after the restart is taken", f"{after.status}")
    stopped = s.stop_kit()
    links = s.check_chain(stopped)
    missing = set(ids) - {link["order_id"] for link in links}
    s.expect(not missing, "no acknowledged order lost: each in the receipt chain",
             f"{len(ids) + 1} sold, {len(missing)} missing")
    events = outbox_events(stopped)

    def shown(kind: str) -> list[str]:
        return [event["reason"] for event in events if event["type"] == kind]

    s.expect(shown("shutdown") == ["battery_critical"] and len(shown("shutdown_cleared")) == 1,
             "remote ops get the shutdown, then its clearing after the restart (outbox)",
             f"shutdown {shown('shutdown')}, shutdown_cleared {shown('shutdown_cleared')}")
