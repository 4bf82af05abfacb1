"""What the monitor believes of a reading: the gauge's trust, the battery level, mains presence.

Every threshold has two levels (hysteresis), so a value that sits on one gives at most one
transition; a gauge reading that cannot be right (straight after the gauge reset, or a jump
no discharge explains) is believed only once it has been repeated. docs/power.md has the
levels.

    >>> from agent.config import PowerConfig
    >>> config = PowerConfig()
    >>> judge_level(config, 9.0, None, "critical")[0], judge_level(config, 9.0, None, "ok")[0]
    ('critical', 'low')
    >>> [mains_seen(config, volts, was) for volts, was in ((4.45, True), (4.45, False),
    ...                                                     (4.39, True))]
    [True, False, False]
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from agent.power.debounce import Held
from agent.power.status import minutes_left

if TYPE_CHECKING:
    from agent.config import PowerConfig
    from hw.power.max17048 import GaugeReading

log = logging.getLogger(__name__)

LEVELS = ("ok", "low", "critical")
"""The battery levels, from best to worst."""


def mains_seen(config: PowerConfig, volts: float, present: bool | None) -> bool:
    """Is mains present by this reading, given what the monitor holds now (``present``)?

    Lost below ``mains_lost_volts``, back at or above ``mains_present_volts``; in between, as
    it was (at the start, present only from ``mains_present_volts``)."""
    if volts >= config.mains_present_volts:
        return True
    if volts < config.mains_lost_volts:
        return False
    return bool(present)


def judge_level(config: PowerConfig, percent: float, left: float | None,
                current: str | None) -> tuple[str, str]:
    """``ok``, ``low`` or ``critical``, and why, by percent and minutes left.

    A level is entered at ``<level>_percent`` or ``<level>_minutes`` and left only above them
    plus ``level_hysteresis_percent`` and ``level_hysteresis_minutes``."""
    rank = LEVELS.index(current) if current in LEVELS else 0
    for level in ("critical", "low"):
        held = rank >= LEVELS.index(level)
        percent_limit = getattr(config, f"{level}_percent") + (
            config.level_hysteresis_percent if held else 0)
        minutes_limit = getattr(config, f"{level}_minutes") + (
            config.level_hysteresis_minutes if held else 0)
        why = []
        if percent <= percent_limit:
            why.append(f"{percent:.1f} % (at most {percent_limit:g} %)")
        if left is not None and left <= minutes_limit:
            why.append(f"{left:.1f} min left (at most {minutes_limit:g} min)")
        if why:
            return level, f"battery {level}: " + ", ".join(why)
    return "ok", ""


class GaugeTrust:
    """Which fuel gauge readings the policy believes.

    A reading is believed at once unless the gauge flags a reset (``reset_indicator``, RI) or
    it lies further from the last believed one than ``gauge_max_step_percent`` plus twice
    what the believed rate explains over the time between. Such a reading is believed once
    readings like it (each within the step of the one before) have come for
    ``gauge_confirm_s``; a confirmed RI is then to be acknowledged (:attr:`acknowledge`).
    """

    def __init__(self, config: PowerConfig) -> None:
        self.max_step = config.gauge_max_step_percent
        self.confirm_s = config.gauge_confirm_s
        self.trusted: GaugeReading | None = None
        """The last reading believed; None before one."""
        self.acknowledge = False
        """A reading with RI was confirmed: clear the gauge's flags before the next read."""
        self._trusted_at = 0.0
        self._candidate: GaugeReading | None = None
        self._candidate_since = 0.0

    def observe(self, reading: GaugeReading, now: float) -> bool:
        """Weigh one reading; True when it is believed (then it is :attr:`trusted`)."""
        doubt = self._doubt(reading, now)
        if doubt is None:
            self._believe(reading, now)
            return True
        candidate = self._candidate
        if candidate is None or abs(reading.percent - candidate.percent) > self.max_step:
            log.warning("fuel gauge reading not trusted until it is repeated: %s", doubt)
            self._candidate_since = now
        self._candidate = reading
        if now - self._candidate_since < self.confirm_s:
            return False
        log.warning("fuel gauge reading confirmed after %.1f s: %.1f %%",
                    now - self._candidate_since, reading.percent)
        self.acknowledge = reading.reset_indicator
        self._believe(reading, now)
        return True

    def _doubt(self, reading: GaugeReading, now: float) -> str | None:
        if reading.reset_indicator:
            return f"the gauge was reset (RI) and reads {reading.percent:.1f} %"
        last = self.trusted
        if last is None:
            return None
        explained = 2 * abs(last.rate_percent_per_hour) * (now - self._trusted_at) / 3600
        step = abs(reading.percent - last.percent)
        if step > self.max_step + explained:
            return f"{reading.percent:.1f} % after {last.percent:.1f} %"
        return None

    def _believe(self, reading: GaugeReading, now: float) -> None:
        self.trusted, self._trusted_at, self._candidate = reading, now, None


def time_left_s(reading: GaugeReading | None) -> float | None:
    """Seconds until empty at the believed rate; None unless discharging."""
    if reading is None:
        return None
    left = minutes_left(reading.percent, reading.rate_percent_per_hour)
    return None if left is None else left * 60


class BatteryJudge:
    """The battery level from the gauge: believed readings (:class:`GaugeTrust`) judged with
    hysteresis (:func:`judge_level`) and held for ``level_hold_s`` (:class:`Held`)."""

    def __init__(self, config: PowerConfig) -> None:
        self.config = config
        self.trust = GaugeTrust(config)
        self.detail = ""
        """Why the level is what it is (empty for ``ok``)."""
        self._level: Held[str] = Held(config.level_hold_s)

    @property
    def level(self) -> str | None:
        """``ok``, ``low`` or ``critical``; None until one has been held."""
        return self._level.value

    def observe(self, reading: GaugeReading, now: float) -> tuple[str | None, str] | None:
        """Weigh a reading; (from, to) when the level changed."""
        if not self.trust.observe(reading, now):
            return None
        before = self._level.value
        left = time_left_s(self.trust.trusted)
        level, detail = judge_level(self.config, reading.percent,
                                    None if left is None else left / 60, before)
        if self._level.observe(level, now):
            self.detail = detail
            log.log(logging.INFO if level == "ok" else logging.WARNING, "%s",
                    detail or "battery ok")
            return before, level
        if level == before:
            self.detail = detail
        return None
