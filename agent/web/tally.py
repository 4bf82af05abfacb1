"""A condition that can come thousands of times a second, logged once per interval with a count.

A refused connection, a header flood, an accept() without a free file descriptor: each is one
event per connection, and a hostile client makes as many as it likes. Logging each would fill
the SD card (a review saw 77 MB of tracebacks in 20 s). :class:`Tally` logs the first one at
once, counts the rest, and says how many came once per interval; a condition quiet for a whole
interval is logged at once again the next time. Call it on the event loop's thread.

    >>> import asyncio, logging
    >>> lines = []
    >>> class Keep(logging.Handler):
    ...     def emit(self, record): lines.append(record.getMessage())
    >>> log = logging.getLogger("tally-doctest"); log.addHandler(Keep()); log.propagate = False
    >>> async def flood():
    ...     tally = Tally(log, interval_s=0.05)
    ...     for n in range(1000):
    ...         tally.note("refused: too many from one address", f"10.0.0.{n % 3}")
    ...     await asyncio.sleep(0.12)
    >>> asyncio.run(flood())
    >>> lines  # doctest: +NORMALIZE_WHITESPACE
    ['refused: too many from one address (10.0.0.0); more are counted, one line per 0.05 s',
     'refused: too many from one address: 999 more in 0.05 s (the latest 10.0.0.0)']
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

INTERVAL_S = 60.0


@dataclass
class _Count:
    since_line: int = 0
    latest: str = ""


class Tally:
    """Log each condition (a fixed text, one per kind) at most once per ``interval_s``."""

    def __init__(self, log: logging.Logger, interval_s: float = INTERVAL_S) -> None:
        self._log = log
        self.interval_s = interval_s
        self._counts: dict[str, _Count] = {}
        self.totals: dict[str, int] = {}
        """How often each condition came since the start (for tests and health)."""

    def note(self, condition: str, detail: str = "") -> None:
        """One more ``condition``; ``detail`` (an address, an error) names the latest one."""
        self.totals[condition] = self.totals.get(condition, 0) + 1
        count = self._counts.get(condition)
        if count is not None:
            count.since_line += 1
            count.latest = detail
            return
        self._log.warning("%s (%s); more are counted, one line per %g s", condition, detail,
                          self.interval_s)
        self._counts[condition] = _Count()
        asyncio.get_running_loop().call_later(self.interval_s, self._line, condition)

    def _line(self, condition: str) -> None:
        count = self._counts[condition]
        if count.since_line == 0:  # quiet for an interval: the next one is logged at once
            del self._counts[condition]
            return
        self._log.warning("%s: %d more in %g s (the latest %s)", condition, count.since_line,
                          self.interval_s, count.latest)
        count.since_line = 0
        asyncio.get_running_loop().call_later(self.interval_s, self._line, condition)
