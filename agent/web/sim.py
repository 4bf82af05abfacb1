"""The staff page's simulator controls (``POST /api/staff/sim/{device}``), ``dropkit sim`` only."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from agent.core.errors import Refusal
from agent.web.api import SimulatedDeviceControls, SimulatedPowerControls
from agent.web.bodies import field

POWER_ACTIONS = ("pull_mains", "restore_mains", "unplug", "plug", "load", "mains_volts",
                 "scenario")
MAX_AMPS, MAX_VOLTS = 10.0, 30.0
MIN_SPEED, MAX_SPEED = 0.01, 500.0
"""The rig's clock runs at most this many times real time (more would hold the loop)."""


def number(data: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    """``data[name]`` as a number from ``low`` to ``high`` (a ValueError naming it otherwise)."""
    try:
        value = float(field(data, name, (int, float), default))
    except OverflowError:
        value = float("inf")
    if not low <= value <= high:
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}")
    return value


def control(devices: SimulatedDeviceControls, power: SimulatedPowerControls | None,
            spawn: Callable[[str, Coroutine[Any, Any, object]], object], device: str,
            data: dict[str, Any]) -> dict[str, Any]:
    """Work one simulator control; returns what the simulator shows afterwards.

    ``spawn`` runs a long button press in the background (the answer does not wait for it).
    """
    try:
        if device == "power" and power is not None:
            action = field(data, "action", str, "")
            if action == "pull_mains":
                power.pull_mains()
            elif action == "restore_mains":
                power.restore_mains()
            elif action in ("unplug", "plug"):
                getattr(power, action)(field(data, "sensor", str, ""))
            elif action == "load":
                power.set_load(number(data, "amps", 0.8, 0, MAX_AMPS))
            elif action == "mains_volts":  # a sagging supply: a brown-out drill
                power.set_mains_volts(number(data, "volts", 5.1, 0, MAX_VOLTS))
            elif action == "scenario":
                speed = number(data, "speed", 1.0, MIN_SPEED, MAX_SPEED)
                power.run_scenario(field(data, "name", str, "live"))
                power.speed = speed
            else:
                raise ValueError(f"action must be {', '.join(POWER_ACTIONS)}")
            return power.snapshot()
        if device == "scan":
            devices.scan(field(data, "text", str, ""))
        elif device == "button":
            button = field(data, "button", str, "")
            if field(data, "long", bool, False):
                spawn("simulator", devices.long_press(button))
            else:
                devices.press(button)
        elif device == "paper":
            devices.set_paper(field(data, "level", str, ""))
        elif device == "printer":
            devices.set_printer_silent(field(data, "silent", bool, False))
            devices.set_cover_open(field(data, "cover_open", bool, False))
        else:
            raise Refusal("not_found", f"no simulator control {device[:40]}")
    except ValueError as exc:
        raise Refusal("invalid", str(exc)) from None
    return devices.state()
