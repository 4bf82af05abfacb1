"""Evidence that lasts: mains presence debounced over polls, the battery level held in time."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Debounced(Generic[T]):
    """A value that takes a new reading only when ``count`` readings in a row agree on it.

    >>> mains = Debounced(2)
    >>> mains.observe(True), mains.value          # the first reading sets it
    (True, True)
    >>> mains.observe(False), mains.observe(True), mains.observe(False), mains.observe(False)
    (False, False, False, True)
    >>> mains.value
    False
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.value: T | None = None
        self._candidate: T | None = None
        self._seen = 0

    def observe(self, reading: T) -> bool:
        """Count a reading; True when it changed the value."""
        if self.value is None or reading == self.value:
            self._seen = 0
            changed, self.value = self.value is None, reading
            return changed
        if reading != self._candidate:
            self._candidate, self._seen = reading, 0
        self._seen += 1
        if self._seen < self.count:
            return False
        return self.force(reading)

    def force(self, value: T) -> bool:
        """Take a value at once (a signal that needs no debounce); True when it changed."""
        changed = value != self.value
        self.value, self._candidate, self._seen = value, None, 0
        return changed


class Held(Generic[T]):
    """A value that takes a new judgement only once it has been made, unbroken, for ``hold_s``.

    Unlike :class:`Debounced` it counts time, not readings, so it holds the same however often
    it is fed; the first judgement needs the hold too (``value`` is None until then).

    >>> level = Held(5.0)
    >>> level.observe("ok", 0.0), level.observe("ok", 5.0), level.value
    (False, True, 'ok')
    >>> level.observe("critical", 6.0), level.observe("ok", 8.0), level.observe("critical", 9.0)
    (False, False, False)
    >>> level.observe("critical", 13.9), level.observe("critical", 14.0), level.value
    (False, True, 'critical')
    """

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.value: T | None = None
        self._candidate: T | None = None
        self._since = 0.0

    def observe(self, judgement: T, now: float) -> bool:
        """Count a judgement made at ``now``; True when it changed the value."""
        if judgement == self.value:
            self._candidate = None
            return False
        if judgement != self._candidate:
            self._candidate, self._since = judgement, now
        if now - self._since < self.hold_s:
            return False
        self.value, self._candidate = judgement, None
        return True
