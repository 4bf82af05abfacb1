"""The JSON Schemas of what the kit and HQ put on the broker: the one source of each contract.

``docs/schemas`` links here. The code that builds a payload names its schema with
:func:`load`, and the tests validate real payloads against the same files.

    >>> sorted(load("acks")["required"])
    ['order_id', 'result']
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

NAMES = ("acks", "events", "manifest", "manifest-answer", "orders", "telemetry-power")


@functools.cache
def load(name: str) -> dict[str, Any]:
    """The schema ``<name>.schema.json`` (draft 2020-12), parsed once."""
    if name not in NAMES:
        raise ValueError(f"no schema {name!r}; expected one of {', '.join(NAMES)}")
    text = (resources.files(__package__) / f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
