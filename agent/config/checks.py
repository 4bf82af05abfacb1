"""The checks a config key's value must pass, and the one error a bad config gives."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration the agent refuses to start with; the message is one line."""


ConfigError.__module__ = "agent.config"  # its public name, where the loader raises it


def check(message: str, test: Any) -> dict[str, Any]:
    """A dataclass field's metadata: ``test(value)`` must hold, else "expected ``message``"."""
    return {"check": (message, test)}


def between(low: float, high: float) -> Callable[[float], bool]:
    """The test of a value from ``low`` to ``high``, both included (never NaN).

    >>> between(1, 50)(50), between(1, 50)(0), between(0, 1)(float("nan"))
    (True, False, False)
    """
    return lambda value: low <= value <= high


def ranged(what: str, low: float, high: float) -> dict[str, Any]:
    """``what`` from ``low`` to ``high``: the message names the bounds the test holds to.

    >>> ranged("an integer", 1024, 1048576)["check"][0]
    'an integer from 1024 to 1048576'
    """
    return check(f"{what} from {_number(low)} to {_number(high)}", between(low, high))


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def positive(value: float) -> bool:
    return value > 0


def seconds(low: float, high: float) -> dict[str, Any]:
    return ranged("a number of seconds", low, high)


def mqtt_url(value: str) -> bool:
    if value == "":
        return True
    try:
        url = urlsplit(value)
        return url.scheme in ("mqtt", "mqtts") and bool(url.hostname) and url.port != 0
    except ValueError:  # a port out of range
        return False


BCM_PIN = check("a BCM pin 0-53 or -1", between(-1, 53))
"""A GPIO pin by its BCM number, -1 for none fitted."""


def items(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def usb_id(value: str) -> bool:
    vendor, _, product = value.partition(":")
    try:
        return 0 <= int(vendor, 16) <= 0xFFFF and 0 <= int(product, 16) <= 0xFFFF
    except ValueError:
        return False
