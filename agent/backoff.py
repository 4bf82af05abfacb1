"""Exponential backoff: the one rule for every retry in the kit.

A wait starts at ``first`` and doubles at each failure up to ``most``; :meth:`Backoff.reset`
starts again after a success. ``jitter`` takes a random share off each wait, so a fleet of kits
that lost one broker does not come back in step.

    >>> backoff = Backoff(0.5, 4.0)
    >>> [backoff.next() for _ in range(5)]
    [0.5, 1.0, 2.0, 4.0, 4.0]
    >>> backoff.reset(); backoff.next()
    0.5
    >>> Backoff.nth(0.1, 5.0, 3)     # the wait after three failures in a row
    0.4
"""

from __future__ import annotations

import random


class Backoff:
    """Waits of ``first``, ``2 * first``, ... up to ``most`` seconds.

    ``jitter`` from 0 to 1: each wait is drawn from ``[wait * (1 - jitter), wait]``.
    """

    def __init__(self, first: float, most: float, *, jitter: float = 0.0) -> None:
        if first <= 0 or most < first or not 0 <= jitter <= 1:
            raise ValueError("expected 0 < first <= most and 0 <= jitter <= 1")
        self.first, self.most, self.jitter = first, most, jitter
        self.failures = 0

    def next(self) -> float:
        """The wait before the next try; counts a failure."""
        wait = self.nth(self.first, self.most, self.failures + 1)
        self.failures += 1
        return wait * random.uniform(1 - self.jitter, 1) if self.jitter else wait

    def peek(self) -> float:
        """The wait :meth:`next` would give (without jitter), counting nothing."""
        return self.nth(self.first, self.most, self.failures + 1)

    def reset(self) -> None:
        """A try succeeded: the next failure waits ``first`` again."""
        self.failures = 0

    @staticmethod
    def nth(first: float, most: float, failures: int) -> float:
        """The wait after ``failures`` failures in a row (1 or more)."""
        return min(first * 2 ** max(failures - 1, 0), most)
