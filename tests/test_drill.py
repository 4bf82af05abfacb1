"""``dropkit drill``: each drill for real (its own ``dropkit sim``, broker and HQ), its verdict
and timeline; a drill that fails when the kit cannot do what it drills; the CLI's refusals."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main
from agent.ops.drill.scenarios import DRILLS
from agent.ops.harness import mosquitto_binary
from tests import needs

# Lines of the timeline each drill must show: an "ok" check (or a plain note) with these words.
KEY_LINES = {
    "payment-failure": ["ok    a card sale of 2 x DRILL-PIN is taken, payment pending",
                        "ok    another customer cannot buy them meanwhile: 409 sold_out naming "
                        "DRILL-PIN",
                        "ok    its stock is on sale again at once: 3 of 3 left",
                        "ok    the void is a link of the receipt chain: links #1 sale, #2 void",
                        "ok    the sale and its void wait in the outbox for HQ: sale, void"],
    "power-loss": ["ok    the kit sees it is on battery within 1 s: OB",
                   "ok    the kit is on line again: OL",
                   "ok    the battery reaches critical: the shutdown countdown starts",
                   # then a 503, or the kit already gone: without a broker to flush to, the
                   # sequence may finish between two tries
                   "ok    sales go on in the countdown, then orders are refused: ",
                   "ok    the shutdown command ran exactly once: 1 time(s)",
                   "ok    remote ops get the countdown and one shutdown event (outbox): "
                   "1 shutdown_pending, 1 shutdown"],
    "power-cut": ["ok    its last step leaves the killpower flag: a halt for power: ",
                  "ok    the halt's shutdown hook runs killpower: the HAT cuts the kit's power: "
                  "exit 0: dropkit-killpower: the halt was for power",
                  "simulated HAT: output cut (1 cut(s), 0 power-on(s))",
                  "the kit is dark: HAT output cut, mains absent",
                  "ok    mains back: the HAT powers the kit again (auto power-on): 1 power-on(s)",
                  "ok    the new start clears the killpower flag: flag removed, logged",
                  "ok    it finds its shutdown intent: no orders until power is safe: logged",
                  "ok    READY again once mains is steady: OL",
                  "ok    a sale after the restart is taken: 201",
                  "ok    no acknowledged order lost: each in the receipt chain: ",
                  " sold, 0 missing",
                  "ok    remote ops get the shutdown, then its clearing after the restart "
                  "(outbox): shutdown ['battery_critical'], shutdown_cleared ['mains_restored']"],
    "double-sold": ["ok    exactly the last 5 are sold: 5 x 201",
                    "ok    every other client gets 409 sold_out naming the SKU: 409 sold_out "
                    "naming DRILL-LAST x 27",
                    "now 0 left, 12 of 12 sold",
                    "ok    one receipt link per sale: 6 links for 6 sales"],
    "paper-out": ["ok    staff see a paper_out alert on the staff page",
                  "ok    the receipts wait: nothing prints without paper: 0 more printed",
                  "ok    each receipt printed once, in order of sale: 4 receipts, copies per "
                  "sale [1, 1, 1, 1]"],
    "broker-outage": ["ok    the kit goes offline at once: mode offline (uplink_unhealthy)",
                      "ok    ten sales offline are taken and queued: 10 x 201",
                      "ok    HQ acks every sale: all reconciled on the kit: 11 of 11",
                      "ok    the kit is online again",
                      "ok    HQ's ledger holds each sale exactly once: 11 sales for 11 sold, "
                      "most copies of one: 1"],
    "disk-full": ["ok    staff are warned before the disk is full: storage low",
                  "ok    every order is sold (201) or refused 507 storage_full, never a 500",
                  "ok    health shows the full disk, with an alert: storage full, alerts "
                  "storage_full",
                  "ok    the kit keeps answering reads: manifest, order: (200, 200)",
                  "ok    every confirmed sale is there after the restart",
                  "ok    the kit takes writes again by itself, without a restart",
                  "ok    sales go on: 201, 201, 201, 201, 201",
                  "ok    every sale's receipt is printed"],
    "hostile-client": ["ok    each flood is cut short: 431, 431, 431",
                       "ok    the kit's memory stays put",
                       "ok    the other phone's sales go on meanwhile",
                       "ok    past its share, the attacker is refused at once: connections 65 "
                       "to 67 answered 429, 429, 429, ",
                       "ok    a sale from the other phone is taken at once: 201",
                       "ok    each is refused at once (429) or held to the deadline (408), never "
                       "unanswered: ",
                       "ok    the kit lets the half-sent requests go after its deadline",
                       "ok    the log says so in a few lines, not one per connection"],
}
TIMELINE_LINE = re.compile(r"^ +\d+\.\d\ds  (ok  |FAIL|    )  \S")


def drill(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["drill", *args])
    return status, capsys.readouterr().out


def test_every_drill_has_its_key_lines() -> None:
    assert set(KEY_LINES) == set(DRILLS)


@pytest.mark.parametrize("name", list(DRILLS))
def test_drill_passes(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = drill(capsys, name, "--state-dir", str(tmp_path))
    if name == "broker-outage" and mosquitto_binary() is None:
        needs.fail_in_ci("mosquitto", "mosquitto")
        assert status == 3, out
        assert out.splitlines()[-2].startswith("SKIP  broker-outage: needs a mosquitto"), out
        return
    if name == "disk-full" and os.geteuid() != 0:
        assert status == 3, out
        assert out.splitlines()[-2].startswith("SKIP  disk-full: needs root"), out
        return
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0].startswith(f"drill {name}: ")
    timeline = lines[1:-2]
    assert all(TIMELINE_LINE.match(line) for line in timeline), out
    assert "start dropkit sim: kit kit-drill at http://127.0.0.1:" in out
    assert "ok    the receipt chain verifies" in out
    for key in KEY_LINES[name]:
        assert key in out, f"{key!r} missing from\n{out}"
    assert not any(line[11:15] == "FAIL" for line in timeline), out
    assert re.fullmatch(rf"PASS  {name}: \d+ checks held in \d+\.\d s", lines[-2]), out
    assert lines[-1] == f"state, logs and receipts kept in {tmp_path}"
    runs = 2 if name == "power-cut" else 1  # halted for power, then started again
    assert (tmp_path / name / "kit.log").read_text().count("stopped; store closed") == runs


def test_a_drill_fails_on_a_kit_that_cannot_do_it(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # The host's own config, with its printer switched off: the paper-out drill cannot hold.
    config = tmp_path / "agent.toml"
    config.write_text('[kit]\nid = "kit-stall-3"\n[printer]\nenabled = false\n'
                      '[mqtt]\nurl = "mqtt://127.0.0.1:1"\n')
    status, out = drill(capsys, "paper-out", "--config", str(config), "--state-dir",
                        str(tmp_path / "runs"))
    assert status == 1, out
    assert "start dropkit sim: kit kit-stall-3 at " in out
    assert re.search(r"^ +\d+\.\d\ds  FAIL  the printer answers, ready: printer disabled$", out,
                     re.MULTILINE), out
    assert ("FAIL  paper-out: the printer answers, ready (saw: printer disabled) "
            "(the drill stopped there)") in out
    # The drill's kit never gets the host's broker.
    written = (tmp_path / "runs" / "paper-out" / "agent.toml").read_text()
    assert "[printer]\nenabled = false" in written and "mqtt" not in written


def test_the_host_config_is_checked_first(tmp_path: Path, capsys) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[printer]\nwidth_mm = 'wide'\n")
    assert main(["drill", "paper-out", "--config", str(config)]) == 2
    assert "[printer] width_mm" in capsys.readouterr().err


def test_unknown_drill_is_refused_with_the_list() -> None:
    done = subprocess.run([sys.executable, "-m", "agent", "drill", "fire-drill"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "dropkit: no drill 'fire-drill'; expected one of payment-failure, power-loss, "
        "double-sold, paper-out, broker-outage, disk-full, hostile-client, power-cut or all "
        "(dropkit drill --list)")
    assert done.stdout == ""


def test_list_and_a_used_state_dir(tmp_path: Path, capsys) -> None:
    status, out = drill(capsys, "--list")
    assert status == 0
    assert [line.split()[0] for line in out.splitlines()] == [*DRILLS, "all"]
    (tmp_path / "double-sold").mkdir()
    assert main(["drill", "all", "--state-dir", str(tmp_path)]) == 2
    assert "double-sold exists" in capsys.readouterr().err
