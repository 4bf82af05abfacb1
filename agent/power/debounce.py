"""A debounced value: the monitor's mains presence and battery level."""

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
