"""The ``[power]`` section: the sensors, the poll, the thresholds and the shutdown."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from agent.config.checks import BCM_PIN, ConfigError, check, positive, ranged, seconds


def _i2c_address(value: int) -> bool:
    return 0x03 <= value <= 0x77


def _command_line(value: str) -> bool:
    try:
        return bool(shlex.split(value))
    except ValueError:
        return False


_CHIP = check('"ina219", "ina226" or "none"', lambda v: v in ("ina219", "ina226", "none"))
_ADDRESS = check("a 7-bit I2C address from 0x03 to 0x77", _i2c_address)
_POSITIVE = check("a positive number", positive)


@dataclass(frozen=True)
class PowerConfig:
    """``[power]``: the sensors, the poll, the thresholds and the shutdown (docs/power.md).

    Field checks follow :mod:`agent.config`; checks across fields raise :class:`ConfigError`
    from here, naming the key.

    >>> PowerConfig(critical_percent=30)
    Traceback (most recent call last):
    ...
    agent.config.ConfigError: [power] critical_percent: expected below low_percent (20), got 30
    """

    enabled: bool = True
    bus: int = field(default=1, metadata=ranged("an I2C bus number", 0, 255))
    mains_chip: str = field(default="ina219", metadata=_CHIP)
    mains_address: int = field(default=0x40, metadata=_ADDRESS)
    mains_shunt_ohms: float = field(default=0.1, metadata=_POSITIVE)
    mains_max_amps: float = field(default=3.2, metadata=_POSITIVE)
    battery_chip: str = field(default="ina226", metadata=_CHIP)
    battery_address: int = field(default=0x41, metadata=_ADDRESS)
    battery_shunt_ohms: float = field(default=0.01, metadata=_POSITIVE)
    battery_max_amps: float = field(default=4.096, metadata=_POSITIVE)
    gauge_address: int = field(default=0x36, metadata=_ADDRESS)
    poll_interval_s: float = field(default=0.1, metadata=seconds(0.01, 5))
    sample_interval_s: float = field(default=1.0, metadata=seconds(0.1, 60))
    debounce_polls: int = field(default=2, metadata=ranged("an integer", 1, 50))
    mains_present_volts: float = field(default=4.5, metadata=_POSITIVE)
    """Mains comes back (OB to OL) at or above this."""
    mains_lost_volts: float = field(default=4.4, metadata=_POSITIVE)
    """Mains is lost (OL to OB) below this; below ``mains_present_volts`` (hysteresis)."""
    mains_stable_s: float = field(default=5.0, metadata=seconds(0, 600))
    """Once on battery at critical, how long mains must be back, unbroken, to cancel."""
    battery_present_volts: float = field(default=2.5, metadata=_POSITIVE)
    low_percent: int = field(default=20, metadata=ranged("a whole percent", 1, 100))
    critical_percent: int = field(default=8, metadata=ranged("a whole percent", 0, 99))
    low_minutes: int = field(default=15, metadata=ranged("whole minutes", 1, 1440))
    critical_minutes: int = field(default=5, metadata=ranged("whole minutes", 0, 1439))
    level_hysteresis_percent: float = field(default=2.0,
                                            metadata=ranged("a number of percent", 0, 20))
    """A level (low, critical) is left only above its percent plus this."""
    level_hysteresis_minutes: float = field(default=2.0,
                                            metadata=ranged("a number of minutes", 0, 60))
    """... and above its minutes plus this."""
    level_hold_s: float = field(default=5.0, metadata=seconds(0, 600))
    """A new battery level (ok, low, critical) is taken once judged for this long, unbroken."""
    gauge_max_step_percent: float = field(default=5.0,
                                          metadata=ranged("a number of percent", 0.5, 100))
    """A gauge reading further than this (plus what the rate explains) from the last trusted
    one is not trusted until confirmed."""
    gauge_confirm_s: float = field(default=5.0, metadata=seconds(0, 600))
    """How long a reading not trusted (a jump, or the gauge reset: RI) must be repeated."""
    dead_time_s: float = field(default=30.0, metadata=seconds(1, 3600))
    shutdown_delay_s: float = field(default=10.0, metadata=seconds(0, 600))
    step_timeout_s: float = field(default=10.0, metadata=seconds(1, 120))
    shutdown_command: str = field(default="systemctl poweroff", metadata=check(
        'a command line such as "systemctl poweroff"', _command_line))
    killpower_command: str = field(default="", metadata=check(
        'a command line that cuts the HAT\'s power, or "" for none',
        lambda v: v == "" or _command_line(v)))
    """Run as root by the shutdown hook (image/files/dropkit-killpower) at the end of a halt
    that was for power, so the kit comes back on when mains returns (docs/power.md)."""
    fail_gpio: int = field(default=-1, metadata=BCM_PIN)
    """The BCM pin of a power-fail line (the X728's is 6); -1 for none."""
    fail_gpio_active_high: bool = True

    def __post_init__(self) -> None:
        for key, value, limit in (("critical_percent", self.critical_percent, "low_percent"),
                                  ("critical_minutes", self.critical_minutes, "low_minutes")):
            if value >= getattr(self, limit):
                raise ConfigError(f"[power] {key}: expected below {limit} "
                                  f"({getattr(self, limit)}), got {value}")
        if self.mains_lost_volts >= self.mains_present_volts:
            raise ConfigError(f"[power] mains_lost_volts: expected below mains_present_volts "
                              f"({self.mains_present_volts}), got {self.mains_lost_volts}")
        if self.sample_interval_s < self.poll_interval_s:
            raise ConfigError(f"[power] sample_interval_s: expected at least poll_interval_s "
                              f"({self.poll_interval_s}), got {self.sample_interval_s}")
        for name in ("mains", "battery"):
            chip = getattr(self, f"{name}_chip")
            if chip == "none":
                continue
            shunt, amps = getattr(self, f"{name}_shunt_ohms"), getattr(self, f"{name}_max_amps")
            from hw.power.ina219 import INA219
            from hw.power.ina226 import INA226

            try:
                {"ina219": INA219, "ina226": INA226}[chip].calibration_for(shunt, amps)
            except ValueError as exc:
                raise ConfigError(f"[power] {name}_max_amps: expected a current the {chip} can "
                                  f"calibrate for with a {shunt} ohm shunt: {exc}") from None
