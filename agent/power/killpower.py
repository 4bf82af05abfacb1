"""The killpower flag: the daemon's word to the shutdown hook that this halt is for power.

As NUT's upsmon writes its POWERDOWNFLAG before a shutdown for power, the daemon writes
``<state_dir>/killpower`` as the last step of a shutdown whose final status is on battery
(``OB``): then ``image/files/dropkit-killpower``, a systemd-shutdown hook, runs
``[power] killpower_command`` at the very end of the halt, which tells the UPS HAT to cut the
kit's power and bring it back when mains returns. A halt on mains (the panel's long press at
the stall) leaves no flag, so the kit stays off. The daemon removes the flag when it starts:
the kit is up again, so the flag has done its work. docs/power.md has the sequence.
"""

from __future__ import annotations

import os
from pathlib import Path

FLAG_NAME = "killpower"


def flag_path(state_dir: Path) -> Path:
    return state_dir / FLAG_NAME


def write_flag(state_dir: Path, reason: str) -> Path:
    """Write the flag durably (file and directory synced: the halt follows at once)."""
    path = flag_path(state_dir)
    partial = path.with_name(FLAG_NAME + ".partial")
    with open(partial, "w", encoding="utf-8") as out:
        out.write(reason + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)
    directory = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path


def clear_flag(state_dir: Path) -> str | None:
    """Remove a flag left by the last halt; what it said, or None when there was none."""
    path = flag_path(state_dir)
    try:
        reason = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return reason
