"""The kit's wall clock, as every stored and published timestamp writes it.

    >>> now_iso().endswith("+00:00")
    True
"""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    """Now, ISO 8601 UTC to the millisecond."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")
