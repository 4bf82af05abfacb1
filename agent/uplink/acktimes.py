"""How fast HQ answers: the kit is online only while HQ settles its sales quickly.

Each sale handed to the broker is timed until HQ's ack. :meth:`AckTimes.healthy` is the p95 of
the answers of the last ``window_s`` seconds, counting the sales still waiting as at least as
slow as they have waited so far; old samples expire, so a drained backlog does not keep the kit
offline.

    >>> times = AckTimes(window_s=60, samples=50)
    >>> times.sent("ord-1", now=0.0); times.answered("ord-1", now=0.2)
    0.2
    >>> times.healthy(limit_s=1.0, now=0.3), times.p95()
    (True, 0.2)
    >>> times.sent("ord-2", now=1.0)
    >>> times.healthy(limit_s=1.0, now=3.0)       # ord-2 has waited 2 s already
    False
    >>> times.restart(now=3.0)                     # HQ came back: ord-2 went again
    >>> times.healthy(limit_s=1.0, now=3.5), times.p95()
    (True, None)
"""

from __future__ import annotations

from collections import deque


def p95(ordered: list[float]) -> float:
    """The 95th percentile of a sorted, non-empty list."""
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


class AckTimes:
    """Sales waiting for HQ and the latest answer times (monotonic seconds)."""

    def __init__(self, window_s: float, samples: int) -> None:
        self.window_s = window_s
        self._sent_at: dict[str, float] = {}  # order id -> when its sale was handed over
        self._answers: deque[tuple[float, float]] = deque(maxlen=samples)  # (when, took)

    def sent(self, order_id: str, now: float) -> None:
        """A sale was handed to the broker (a re-send keeps the first time)."""
        self._sent_at.setdefault(order_id, now)

    def answered(self, order_id: str, now: float) -> float | None:
        """HQ answered a sale; how long it took, None for a sale not timed here."""
        sent = self._sent_at.pop(order_id, None)
        if sent is None:
            return None
        self._answers.append((now, now - sent))
        return now - sent

    def restart(self, now: float) -> None:
        """HQ came (back) and the sales still waiting went to it again: judge HQ afresh, from
        the answers to come and those waits counted from ``now``, not from an outage it had
        nothing to do with."""
        self._answers.clear()
        self._sent_at = dict.fromkeys(self._sent_at, now)

    def p95(self) -> float | None:
        """The p95 of the answers kept, None before any."""
        took = sorted(latency for _, latency in self._answers)
        return p95(took) if took else None

    def healthy(self, limit_s: float, now: float) -> bool:
        """True while the p95 of recent answers and waits is within ``limit_s``."""
        while self._answers and now - self._answers[0][0] > self.window_s:
            self._answers.popleft()
        waits = [latency for _, latency in self._answers]
        waits += [now - sent for sent in self._sent_at.values()]
        return not waits or p95(sorted(waits)) <= limit_s
