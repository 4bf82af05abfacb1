"""When the kit shuts down: the countdown, what cancels it, and the battery's own deadline.

:class:`ShutdownPolicy` decides; it reads no sensor and runs nothing. The monitor feeds it at
every poll with what it holds (mains debounced, the battery level held, the believed time
left) and carries out the :class:`Decision` it returns. docs/power.md describes the rules.

    >>> from agent.config import PowerConfig
    >>> policy = ShutdownPolicy(PowerConfig())
    >>> critical = ("battery_critical", "battery critical: 7.0 %")
    >>> policy.update(0.0, False, critical, False, 600.0)[0].kind
    'pending'
    >>> policy.update(0.3, True, critical, False, 600.0)        # mains back, not yet stable
    []
    >>> policy.update(0.5, False, critical, False, 600.0)       # gone again
    []
    >>> [d.kind for d in policy.update(10.0, False, critical, False, 590.0)]
    ['commit']
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from agent.config import PowerConfig

log = logging.getLogger(__name__)

STEPS_IN_SEQUENCE = 5
"""The shutdown sequence's four steps and its command, each up to ``step_timeout_s``."""


@dataclass(frozen=True)
class Decision:
    """What the monitor is to do now.

    - ``pending``: the countdown starts (``in_s``);
    - ``cancelled``: the countdown stops (``reason``: ``mains_restored``, ``battery_recovered``);
    - ``commit``: shut down now (``reason``, ``detail``);
    - ``cleared``: after a restart, the shutdown intent no longer holds (``reason``).
    """

    kind: Literal["pending", "cancelled", "commit", "cleared"]
    reason: str
    detail: str = ""
    in_s: float = 0.0


class ShutdownPolicy:
    """The countdown from a critical battery to the commit (FSD), as docs/power.md says.

    A critical episode starts on battery at a critical level and lasts until the level is no
    longer critical. Within it, the time on battery is counted against a budget: the believed
    time left when it started (or later, if less), less the sequence's worst case
    (``5 × step_timeout_s``), one sample and the debounce; without a rate,
    ``shutdown_delay_s``. Mains back and unbroken
    for ``mains_stable_s`` cancels a countdown but not the episode, so mains that keeps coming
    and going can postpone the commit only until the budget is spent.
    """

    def __init__(self, config: PowerConfig) -> None:
        self.delay_s = config.shutdown_delay_s
        self.stable_s = config.mains_stable_s
        self.lag_s = config.debounce_polls * config.poll_interval_s
        """How long mains is lost before the debounce says so."""
        self.reserve_s = (STEPS_IN_SEQUENCE * config.step_timeout_s + config.sample_interval_s
                          + self.lag_s)
        """The sequence's worst case, and how old the time left and OB may be when read."""
        self.committed = False
        self.commit_at: float | None = None
        """When the running countdown ends; None without one."""
        self.resumed = False
        """Started again after a committed shutdown: orders stay refused until this clears."""
        self._reason = ("", "")
        self._budget_s: float | None = None
        """On-battery seconds the episode may last; None outside an episode."""
        self._spent_s = 0.0
        self._last: float | None = None
        self._mains_was: bool | None = None
        self._mains_since: float | None = None

    def resume(self) -> None:
        """The shutdown was committed before a restart: back into it unless the evidence says
        the battery is no longer critical or mains is back for good."""
        self.resumed = True

    def update(self, now: float, mains: bool | None, critical: tuple[str, str] | None,
               recovered: bool, time_left_s: float | None) -> list[Decision]:
        """One poll's evidence: mains (True on line, False on battery, None unknown), why the
        battery is critical (None if not, or not known), whether it is known to be no longer
        critical, and the believed seconds left. Returns what to do, in order."""
        elapsed = 0.0 if self._last is None else now - self._last
        if mains is False and self._mains_was is not False:
            elapsed += self.lag_s  # on battery since before the debounce said so
        self._last, self._mains_was = now, mains
        if self.committed:
            return []
        if mains is not True:
            self._mains_since = None
        elif self._mains_since is None:
            self._mains_since = now
        stable = self._mains_since is not None and now - self._mains_since >= self.stable_s
        if self._budget_s is not None and mains is False:
            self._spent_s += elapsed
        if self.resumed and stable:  # mains steady is enough, whatever the gauge knows yet
            self.resumed = False
            return [Decision("cleared", "mains_restored")]
        if critical is None:
            return self._recovered() if recovered else []
        self._reason = critical
        self._estimate(time_left_s, mains is False)
        if self.resumed:
            return self._commit() if mains is False else []
        if self.commit_at is not None:
            return self._counting(now, mains, stable)
        if mains is not False:
            return []
        left = self._budget_left()
        in_s = self.delay_s if left is None else max(0.0, min(self.delay_s, left))
        self.commit_at = now + in_s
        pending = Decision("pending", critical[0], critical[1], in_s)
        return [pending, *self._commit()] if in_s == 0 else [pending]

    def _counting(self, now: float, mains: bool | None, stable: bool) -> list[Decision]:
        if stable:
            self.commit_at = None
            return [Decision("cancelled", "mains_restored")]
        left = self._budget_left()
        assert self.commit_at is not None
        if left is not None and left <= 0:
            return self._commit()  # the battery's own time: mains coming and going or not
        if now >= self.commit_at and mains is not True:
            return self._commit()
        return []

    def _recovered(self) -> list[Decision]:
        """The level is known and no longer critical: the episode ends."""
        decisions = []
        if self.commit_at is not None:
            decisions.append(Decision("cancelled", "battery_recovered"))
        if self.resumed:
            self.resumed = False
            decisions.append(Decision("cleared", "battery_recovered"))
        self.commit_at, self._budget_s, self._spent_s = None, None, 0.0
        return decisions

    def _estimate(self, time_left_s: float | None, on_battery: bool) -> None:
        """Start the episode's budget, or lower it when the believed time left says less."""
        if self._budget_s is None:
            if not on_battery:
                return
            self._spent_s = 0.0
            self._budget_s = (self.delay_s if time_left_s is None
                              else max(0.0, time_left_s - self.reserve_s))
        elif time_left_s is not None:
            self._budget_s = min(self._budget_s,
                                 self._spent_s + max(0.0, time_left_s - self.reserve_s))

    def _budget_left(self) -> float | None:
        return None if self._budget_s is None else self._budget_s - self._spent_s

    def _commit(self) -> list[Decision]:
        self.committed, self.commit_at = True, None
        reason, detail = self._reason
        if self.resumed:
            detail += "; still so after a restart"
        return [Decision("commit", reason, detail)]
