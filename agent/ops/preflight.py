"""``dropkit preflight``: the checklist before a drop, run on the kit against its running daemon.

The seed's checklist (power redundancy 12 h before, a test sale and reconciliation 48 h before,
a simulation with staff 3 h before) as plain checks: both power sources there and which feeds
the kit, the battery's charge and time left, the chips' identity, the printer with paper (a
test slip on request), a scanner, the panel's buttons (on request), the broker and HQ, the
manifest, the disk and what each sale writes to it, and the clock. Each check is ``pass``,
``warn``, ``fail`` or ``skip`` with what it found and, unless it passed, one line of what to
do; any ``fail`` makes the exit code 1.

What the daemon knows comes from its HTTP API (``/api/health``; the staff calls for the test
slip and the button presses); what only the machine knows is read here: the clock's sync state
(the kernel's, as every order records it) and the power chips' identity on the I2C bus.
Everything here is stdlib, bar the drivers for the chips' identity.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from agent.ops.harness import EventStream, KitClient

if TYPE_CHECKING:
    from agent.config import PowerConfig
    from hw.power.words import SMBusLike

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
FULL_PERCENT, LOW_PERCENT = 90.0, 50.0
"""A battery below the first should be charged before the drop; below the second it fails."""
WRITES_WARN_BYTES = 64 * 1024
"""A sale that writes more than this to the card is worth a look (docs/store.md: about 30 KB)."""
WRITES_JUDGED_AFTER = 20
"""Sales since the start before the bytes per sale are judged (the first carry the start's)."""
BUTTON_WAIT_S = 30.0
SETTLE_S = 15.0
"""How long a kit that has just started is given for its power monitor's first report."""


@dataclass(frozen=True)
class Check:
    """One line of the checklist: ``verdict`` of ``name``, what was ``found``, what to ``do``."""

    name: str
    verdict: str
    found: str
    do: str = ""


Facts = dict[str, Any]
"""The kit's ``/api/health``."""


def kit_check(health: Facts) -> Check:
    status = health.get("status")
    simulated = " (simulated devices)" if health.get("simulated") else ""
    found = (f"{health.get('kit_id')} {status}, version {health.get('version')}, up "
             f"{health.get('uptime_s')} s{simulated}")
    if status == "ready":
        return Check("kit", PASS, found)
    degraded = "; ".join(f"{part}: {why}" for part, why in (health.get("degraded") or {}).items())
    if status == "stopping":
        return Check("kit", FAIL, found, "the kit is shutting down: bring its power back and "
                                         "start it again")
    return Check("kit", FAIL, f"{found}: {degraded}", "fix what is degraded (the staff page "
                                                      "says each part's reason), then run "
                                                      "preflight again")


def power_check(health: Facts) -> Check:
    power = health.get("power") or {}
    sources = power.get("sources") or {}
    if not sources:
        return Check("power sources", FAIL, "no power reading from the kit's sensors",
                     "check the UPS HAT and [power] in the config (docs/power.md)")
    faults = power.get("sensor_faults") or []
    present = [name for name in ("mains", "battery") if (sources.get(name) or {}).get("present")]
    feeding = power.get("feeding") or "nothing"
    found = (f"{' and '.join(present) or 'neither source'} present, {feeding} feeds the kit"
             f" ({power.get('state')})")
    if faults:
        return Check("power sources", FAIL, f"{found}; sensor fault: {', '.join(faults)}",
                     "check the sensors' wiring and I2C addresses (docs/power.md)")
    if "mains" not in present:
        return Check("power sources", FAIL, found, "plug the mains supply in (check its cable "
                                                   "and socket): the kit runs on its battery")
    if "battery" not in present:
        return Check("power sources", FAIL, found, "connect the battery: without it a mains "
                                                   "blip stops the kit")
    return Check("power sources", PASS, found)


def battery_check(health: Facts) -> Check:
    power = health.get("power") or {}
    ups = power.get("ups") or {}
    percent = ups.get("percent")
    if percent is None:
        return Check("battery", FAIL, "the fuel gauge gives no charge",
                     "check the gauge (MAX17048) and its I2C address")
    watts = sum((source.get("watts") or 0) for source in (power.get("sources") or {}).values()
                if source.get("present"))
    minutes = ups.get("minutes_left")
    if minutes is not None:
        left = f"{int(minutes // 60)} h {int(minutes % 60)} min left at the present load"
    elif power.get("feeding") == "battery":
        left = "time left not known yet (the gauge needs a few minutes of discharge)"
    else:
        left = "time left is measured on battery (the kit is on mains)"
    found = f"{percent:.0f}% charged, {left} ({watts:.1f} W)"
    if percent < LOW_PERCENT:
        return Check("battery", FAIL, found, "charge the battery before the drop")
    if percent < FULL_PERCENT:
        return Check("battery", WARN, found, "charge the battery to full before the drop")
    return Check("battery", PASS, found)


def identity_check(health: Facts, identify: Callable[[], list[tuple[str, str]]] | None
                   ) -> Check:
    """The chips' identity: ``identify()`` gives ``(chip, answer)`` per chip (``ok``, or what
    is wrong)."""
    if health.get("simulated"):
        return Check("chip identity", SKIP, "simulated sensors: not checked",
                     "on the kit itself preflight reads the chips' id registers")
    if identify is None:
        return Check("chip identity", SKIP, "no [power] sensors here", "")
    try:
        answers = identify()
    except OSError as exc:
        return Check("chip identity", FAIL, f"the I2C bus cannot be read: {exc}",
                     "check [power] bus and that the UPS HAT is seated")
    found = ", ".join(f"{chip} {answer}" for chip, answer in answers)
    if any(answer != "ok" for _, answer in answers):
        return Check("chip identity", FAIL, found, "the config names another chip than the "
                                                   "one fitted: fix [power] *_chip and addresses")
    return Check("chip identity", PASS, found)


def chip_identity(power: PowerConfig, bus: SMBusLike | None = None
                  ) -> Callable[[], list[tuple[str, str]]] | None:
    """How to ask the chips ``[power]`` names who they are, on ``bus`` (the kit's I2C bus by
    default); None without power sensors. Each answer: ``ok`` (the driver's own check: an
    INA226's or MAX17048's id registers, an INA219's power-on values), ``answers as another
    chip (what answered)`` or ``does not answer``."""
    if not power.enabled:
        return None

    def identify() -> list[tuple[str, str]]:
        from agent.power.sensors import LazySMBus, build_sensors

        own = LazySMBus(power.bus) if bus is None else None
        try:
            sensors = build_sensors(power, own or bus)  # type: ignore[arg-type]
            answers = []
            for role, checked in (("mains", sensors.mains), ("battery", sensors.battery),
                                  ("gauge", sensors.gauge)):
                if checked is None:
                    continue
                driver = checked.driver  # type: ignore[attr-defined]
                name = f"{role} {driver.CHIP} at {driver.address:#04x}"
                try:
                    answered = driver.identity()
                except OSError:
                    answers.append((name, "does not answer"))
                    continue
                answers.append((name, f"answers as another chip ({answered})" if answered
                                else "ok"))
            return answers
        finally:
            if own is not None:
                own.close()
    return identify


PRINTER_TODO = {"paper_out": "load a paper roll", "paper_near_end": "put in a new paper roll",
                "cover_open": "close the printer's cover",
                "offline": "check the printer: it is offline (its button, paper or cover)",
                "not_responding": "check the printer's power and cable: it does not answer",
                "unknown": "wait a few seconds and run preflight again: the printer was not "
                           "asked yet"}


def printer_check(health: Facts) -> Check:
    printer = (health.get("devices") or {}).get("printer") or {}
    state = printer.get("state", "unknown")
    if state == "disabled":
        return Check("printer", WARN, "disabled in the config: no receipts will print",
                     "set [printer] enabled = true if the kit has a printer")
    found = f"{state}, paper {printer.get('paper', 'unknown')}"
    if state == "ready":
        return Check("printer", PASS, found)
    return Check("printer", WARN if state == "paper_near_end" else FAIL, found,
                 PRINTER_TODO.get(state, "check the printer"))


def test_slip_check(kit: KitClient) -> Check:
    answer = kit.request("POST", "/api/staff/printer/test-slip", staff=True, timeout=60)
    if answer.status != 200:
        detail = (answer.data or {}).get("detail", answer.status)
        return Check("test slip", FAIL, f"refused: {detail}", "fix the printer, then run "
                                                              "preflight --test-slip again")
    result, printer = answer.data["result"], answer.data["printer"]
    if result == "printed":
        return Check("test slip", PASS, "printed (the printer took it and answered after)",
                     "")
    if result == "unsure":
        return Check("test slip", WARN, answer.data.get("note", ""),
                     "look whether the slip came out")
    return Check("test slip", FAIL, f"not sent: the printer is {printer.get('state')}",
                 PRINTER_TODO.get(printer.get("state", ""), "check the printer"))


def scanner_check(health: Facts) -> Check:
    scanners = (health.get("devices") or {}).get("scanners") or []
    if scanners:
        return Check("scanner", PASS, ", ".join(scanners))
    if "scanner" not in (health.get("parts") or {}):
        return Check("scanner", WARN, "disabled in the config",
                     "set [scanner] enabled = true if the kit has a scanner")
    return Check("scanner", FAIL, "no barcode scanner found", "plug the scanner in (USB)")


def panel_check(health: Facts) -> Check:
    panel = (health.get("devices") or {}).get("panel") or {}
    state = panel.get("state", "disabled")
    if state == "ready":
        return Check("panel", PASS, "buttons and LEDs ready")
    if state == "disabled":
        return Check("panel", WARN, "disabled in the config", "set [panel] enabled = true if "
                                                              "the kit has a panel")
    return Check("panel", FAIL, f"{state}: {panel.get('error', '')}",
                 "check the panel's wiring and [panel] pins (docs/field-io.md)")


BUTTON_HOW = {"offline": "press OFFLINE twice (each press toggles the offline latch)",
              "reprint": "press REPRINT once (it prints a copy of the last receipt)",
              "shutdown": "press SHUTDOWN briefly (only a long hold shuts down)"}


def buttons_check(kit: KitClient, health: Facts, buttons: list[str], say: Callable[[str], None],
                  wait_s: float = BUTTON_WAIT_S) -> Check:
    """Ask for each fitted button in turn and watch the staff event stream for its press."""
    if health.get("simulated"):
        return Check("buttons", SKIP, "simulated panel: not pressed",
                     "on the kit itself run preflight --buttons and press each one")
    stream = EventStream(kit)
    try:
        missed = []
        for button in buttons:
            say(f"  now {BUTTON_HOW.get(button, f'press {button.upper()}')} "
                f"(within {wait_s:g} s)")
            deadline = time.monotonic() + wait_s
            while stream.find("button", button=button) is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if stream.find("button", button=button) is None:
                missed.append(button)
    finally:
        stream.close()
    if missed:
        return Check("buttons", FAIL, f"no press of {', '.join(missed)} came",
                     "check those buttons' wiring and [panel] pins")
    return Check("buttons", PASS, f"{', '.join(buttons)} each pressed")


def broker_check(health: Facts) -> Check:
    uplink = health.get("uplink") or {}
    state = uplink.get("state", "off")
    if state == "off":
        return Check("broker", FAIL, "no uplink configured", "set [mqtt] url: sales must "
                                                             "reach HQ")
    broker = uplink.get("broker", "")
    if state == "connected":
        return Check("broker", PASS, f"connected to {broker}")
    host, _, port = broker.rpartition(":")
    try:
        socket.create_connection((host, int(port)), 2).close()
        reachable = "its port answers, the kit is not connected"
    except (OSError, ValueError):
        reachable = "nothing answers at its address"
    return Check("broker", FAIL, f"{state}: {broker}: {reachable}",
                 "start the broker or check the kit's network (Wi-Fi uplink, [mqtt] url, "
                 "credentials)")


def hq_check(health: Facts) -> Check:
    if (health.get("uplink") or {}).get("state", "off") == "off":
        return Check("HQ", SKIP, "no uplink: not checked", "set [mqtt] url")
    reasons = health.get("mode_reasons") or []
    if health.get("mode") == "online":
        return Check("HQ", PASS, "HQ answers sales (the kit is online)",
                     "")
    return Check("HQ", WARN, f"the kit is offline ({', '.join(reasons) or 'no reason'}): HQ "
                             "has not answered lately",
                 "check that dropkit hq runs; sales wait in the outbox meanwhile")


def hq_round_trip_check() -> Check:
    return Check("HQ round trip", SKIP, "a marked test order that HQ voids, and the manifest "
                                        "against HQ's allocation: not checked",
                 "HQ has no test orders or allocation query yet: place and void a sale by hand")


def manifest_check(health: Facts) -> Check:
    manifest = health.get("manifest") or {}
    if manifest.get("version") is None:
        return Check("manifest", FAIL, "no manifest loaded", "set [orders] manifest and "
                                                             "restart the kit")
    if conflict := manifest.get("conflict"):
        return Check("manifest", FAIL, f"{manifest['version']}; the file {conflict.get('file')} "
                                       f"was refused", "see the staff page's manifest alert")
    return Check("manifest", PASS, f"version {manifest['version']}")


def storage_check(health: Facts) -> Check:
    storage = health.get("storage") or {}
    writes = health.get("writes") or {}
    per_sale = writes.get("bytes_per_sale")
    wear = (f"{per_sale:,} bytes written per sale since the start" if per_sale is not None
            else "no sale since the start")
    found = f"{storage.get('free_mb')} MB free, {wear}"
    state = storage.get("state")
    if state in ("full", "damaged", "lost"):
        return Check("storage", FAIL, f"{state}: {storage.get('detail')}", "see docs/store.md: "
                                                                           "free space, restart")
    if state == "low":
        return Check("storage", WARN, found, "free space on the kit's card")
    if per_sale is not None and writes.get("sales", 0) >= WRITES_JUDGED_AFTER and \
            per_sale > WRITES_WARN_BYTES:
        return Check("storage", WARN, found, "each sale writes more than expected: check the "
                                             "store's page size (docs/store.md)")
    return Check("storage", PASS, found)


def clock_check(synced: bool, source: str) -> Check:
    if synced:
        return Check("clock", PASS, f"synced ({source})")
    return Check("clock", WARN, f"not synced ({source})",
                 "connect the kit to a network with NTP before the drop: receipts will say "
                 "the kit's clock was not set")


def clock_source() -> str:
    """Which time service the machine has, in a few words."""
    for command in (["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                    ["chronyc", "-n", "tracking"]):
        if shutil.which(command[0]) is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            done = subprocess.run(command, capture_output=True, text=True, timeout=5)
            if done.returncode == 0:
                first = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
                return f"{command[0]}: {first}"
    return "the kernel's adjtimex; no timedatectl or chronyc answered"


@dataclass(frozen=True)
class Options:
    test_slip: bool = False
    buttons: tuple[str, ...] = ()
    """The fitted buttons to press; empty: not asked for."""


def checklist(kit: KitClient, options: Options, *, synced: bool, source: str,
              identify: Callable[[], list[tuple[str, str]]] | None,
              say: Callable[[str], None]) -> list[Check]:
    """Every check, against the kit at ``kit``; a kit that does not answer is one failure."""
    try:
        health = kit.health()
        deadline = time.monotonic() + SETTLE_S
        while settling(health) and time.monotonic() < deadline:
            time.sleep(0.2)
            health = kit.health()
    except OSError as exc:
        return [Check("kit", FAIL, f"no answer at {kit.url}: {exc}",
                      "start the kit (systemctl start dropkit) or give its --url")]
    checks = [kit_check(health), power_check(health), battery_check(health),
              identity_check(health, identify), printer_check(health)]
    if options.test_slip:
        checks.append(test_slip_check(kit))
    checks += [scanner_check(health), panel_check(health)]
    if options.buttons:
        checks.append(buttons_check(kit, health, list(options.buttons), say))
    checks += [broker_check(health), hq_check(health), hq_round_trip_check(),
               manifest_check(health), storage_check(health), clock_check(synced, source)]
    return checks


def settling(health: Facts) -> bool:
    """The kit has just started and its power monitor has not given the state or the charge
    yet (the gauge's first reading is confirmed over a few seconds)."""
    power = health.get("power") or {}
    return (health.get("uptime_s") or 0) < SETTLE_S and (
        power.get("state", "unknown") == "unknown" or (power.get("ups") or {}).get("percent")
        is None)


def report(checks: list[Check], out: TextIO) -> int:
    """Print the checklist and the verdict; the exit code (1 when anything failed)."""
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{check.verdict.upper():4}  {check.name:<{width}}  {check.found}", file=out)
        if check.do and check.verdict != PASS:
            print(f"{'':4}  {'':<{width}}  -> {check.do}", file=out)
    counts = {verdict: sum(check.verdict == verdict for check in checks)
              for verdict in (PASS, WARN, FAIL, SKIP)}
    verdict = "NOT READY" if counts[FAIL] else "READY"
    print(f"preflight: {verdict} ({counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} "
          f"fail, {counts[SKIP]} skipped)", file=out)
    return 1 if counts[FAIL] else 0
