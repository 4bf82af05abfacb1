"""The checks a config key's value must pass, and the one error a bad config gives."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit


class ConfigError(ValueError):
    """A configuration the agent refuses to start with; the message is one line."""


ConfigError.__module__ = "agent.config"  # its public name, where the loader raises it


def check(message: str, test: Any) -> dict[str, Any]:
    """A dataclass field's metadata: ``test(value)`` must hold, else "expected ``message``"."""
    return {"check": (message, test)}


def port(value: int) -> bool:
    return 0 <= value <= 65535


def positive(value: float) -> bool:
    return value > 0


def seconds(low: float, high: float) -> dict[str, Any]:
    return check(f"a number of seconds from {low:g} to {high:g}", lambda v: low <= v <= high)


def mqtt_url(value: str) -> bool:
    if value == "":
        return True
    try:
        url = urlsplit(value)
        return url.scheme in ("mqtt", "mqtts") and bool(url.hostname) and url.port != 0
    except ValueError:  # a port out of range
        return False


def pin(value: int) -> bool:
    return -1 <= value <= 53


def items(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def usb_id(value: str) -> bool:
    vendor, _, product = value.partition(":")
    try:
        return 0 <= int(vendor, 16) <= 0xFFFF and 0 <= int(product, 16) <= 0xFFFF
    except ValueError:
        return False
