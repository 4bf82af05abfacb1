"""The UPS HAT's power switch while no kit runs: the killpower cut, and the power-on when mains
returns, for the power-cut drill.

The power rig of ``dropkit sim`` (:class:`simulators.live_power.SimulatedPower`) lives in the
kit's process; when the kit stops it is saved to the kit's rig file (``sim-power.json``, its
:meth:`~simulators.live_power.SimulatedPower.snapshot`), and the next start carries on from it.
Between the two, after a halt, only the HAT acts, as a Geekworm X728 with its auto power-on
jumper set does (docs/power.md, killpower per HAT):

- ``killpower`` (the ``[power] killpower_command`` the shutdown hook runs at the end of a halt
  for power): the HAT cuts its output, and the kit is dark;
- mains back (:meth:`SimulatedHat.set_mains`): the rig file says mains is present again, and
  a HAT whose output was cut powers the kit again, as auto power-on follows the present state
  of mains (so the race NUT knows, mains back before the cut, ends powered too). Then the
  kit's start (systemd's, at boot) carries on from that rig: on mains, the pack as it was.

The HAT's own state is kept in the rig file under ``"hat"``, which the kit ignores. As a
``[power] killpower_command``::

    python -m simulators.power_hat /var/lib/dropkit/sim-power.json killpower

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> rig = Path(tempfile.mkdtemp()) / "sim-power.json"
    >>> _ = rig.write_text(json.dumps({"mains_present": False, "battery_percent": 4.0}))
    >>> hat = SimulatedHat(rig)
    >>> hat.powered, hat.killpower(), hat.powered
    (True, False, False)
    >>> hat.set_mains(True), hat.state()["power_ons"], json.loads(rig.read_text())["mains_present"]
    (True, 1, True)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

MAINS_VOLTS = 5.1
"""Mains as the rig's adapter gives it (simulators.power_rig's default)."""


class SimulatedHat:
    """The HAT of the kit whose rig file is ``rig_file``: its output, cut or on."""

    def __init__(self, rig_file: Path, *, auto_power_on: bool = True) -> None:
        self.rig_file = rig_file
        self.auto_power_on = auto_power_on

    def state(self) -> dict[str, Any]:
        """``output_on``, and the counts of ``cuts`` and ``power_ons`` so far."""
        return {"output_on": True, "cuts": 0, "power_ons": 0, **self.rig().get("hat", {})}

    @property
    def powered(self) -> bool:
        """Whether the HAT powers the kit."""
        return bool(self.state()["output_on"])

    def killpower(self) -> bool:
        """Cut the output (the end of a halt for power); whether the kit is powered after."""
        hat = self.state()
        hat["output_on"] = False
        hat["cuts"] += 1
        self._follow_mains(self.rig(), hat)
        return hat["output_on"]

    def set_mains(self, present: bool) -> bool:
        """Mains goes (or comes back); whether the kit is powered after."""
        rig = self.rig()
        rig["mains_present"] = present
        if present:
            rig["mains_volts"] = max(float(rig.get("mains_volts", 0.0)), MAINS_VOLTS)
        hat = self.state()
        self._follow_mains(rig, hat)
        return hat["output_on"]

    def _follow_mains(self, rig: dict[str, Any], hat: dict[str, Any]) -> None:
        """Auto power-on: a cut output comes on again while mains is present; then save."""
        if not hat["output_on"] and self.auto_power_on and rig.get("mains_present"):
            hat["output_on"] = True
            hat["power_ons"] += 1
        rig["hat"] = hat
        partial = self.rig_file.with_name(self.rig_file.name + ".partial")
        partial.write_text(json.dumps(rig))
        os.replace(partial, self.rig_file)

    def rig(self) -> dict[str, Any]:
        """The rig file as it stands: what the stopped kit left, and the HAT's state."""
        return json.loads(self.rig_file.read_text())


def main(argv: list[str]) -> int:
    """``RIG_FILE killpower|mains-on|mains-off|status``: one line of what the HAT does."""
    actions = ("killpower", "mains-on", "mains-off", "status")
    if len(argv) != 2 or argv[1] not in actions:
        print(f"usage: python -m simulators.power_hat RIG_FILE {'|'.join(actions)}",
              file=sys.stderr)
        return 2
    hat = SimulatedHat(Path(argv[0]))
    try:
        if argv[1] == "killpower":
            hat.killpower()
        elif argv[1] != "status":
            hat.set_mains(argv[1] == "mains-on")
        state = hat.state()
    except (OSError, ValueError) as exc:
        print(f"simulated HAT: {argv[0]}: {exc}", file=sys.stderr)
        return 1
    print(f"simulated HAT: output {'on' if state['output_on'] else 'cut'} "
          f"({state['cuts']} cut(s), {state['power_ons']} power-on(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
