"""The kit's configuration: a TOML file checked against typed sections at start.

Every key has a default that works in ``dropkit sim``. A wrong key or value stops the start with
one line naming the file, the key and what was expected::

    >>> from agent.config import parse_config
    >>> parse_config({"http": {"port": 8080}}, source="agent.toml").http.port
    8080
    >>> parse_config({"http": {"port": "eighty"}}, source="agent.toml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    agent.config.ConfigError: agent.toml: [http] port: expected an integer from 0 to 65535, ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from hw.printer.transport import PrinterConfig

DEFAULT_CONFIG_PATH = Path("/etc/dropkit/agent.toml")
CONFIG_ENV = "DROPKIT_CONFIG"


class ConfigError(ValueError):
    """A configuration the agent refuses to start with; the message is one line."""


def _check(message: str, test: Any) -> dict[str, Any]:
    return {"check": (message, test)}


def _port(value: int) -> bool:
    return 0 <= value <= 65535


def _positive(value: float) -> bool:
    return value > 0


@dataclass(frozen=True)
class KitConfig:
    id: str = field(default="", metadata=_check(
        "1 to 64 letters, digits, '-' or '_'",
        lambda v: v == "" or (len(v) <= 64 and v.replace("-", "").replace("_", "").isalnum())))
    name: str = "Drop kit"
    state_dir: str = "/var/lib/dropkit"


@dataclass(frozen=True)
class HttpConfig:
    host: str = "0.0.0.0"
    port: int = field(default=8080, metadata=_check("an integer from 0 to 65535", _port))
    staff_token: str = field(default="", metadata=_check(
        "a token of at least 16 characters", lambda v: v == "" or len(v) >= 16))
    staff_token_file: str = ""
    max_body_bytes: int = field(default=16384, metadata=_check(
        "an integer from 1024 to 1048576", lambda v: 1024 <= v <= 1048576))
    staff_failures_per_minute: int = field(default=10, metadata=_check(
        "a positive integer", _positive))


@dataclass(frozen=True)
class OrdersConfig:
    manifest: str = ""
    max_lines: int = field(default=20, metadata=_check(
        "an integer from 1 to 200", lambda v: 1 <= v <= 200))
    max_qty: int = field(default=99, metadata=_check(
        "an integer from 1 to 10000", lambda v: 1 <= v <= 10000))


def _seconds(low: float, high: float) -> dict[str, Any]:
    return _check(f"a number of seconds from {low:g} to {high:g}", lambda v: low <= v <= high)


def _mqtt_url(value: str) -> bool:
    if value == "":
        return True
    try:
        url = urlsplit(value)
        return url.scheme in ("mqtt", "mqtts") and bool(url.hostname) and url.port != 0
    except ValueError:  # a port out of range
        return False


@dataclass(frozen=True)
class MqttConfig:
    url: str = field(default="", metadata=_check(
        "mqtt://host[:port] or mqtts://host[:port] (empty: uplink off)", _mqtt_url))
    client_id: str = ""
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    protocol: str = field(default="5", metadata=_check('"5" or "3.1.1"',
                                                       lambda v: v in ("5", "3.1.1")))
    topic_prefix: str = field(default="dropkit", metadata=_check(
        "a topic prefix without wildcards", lambda v: bool(v) and not set(v) & set("+#")))
    session_expiry_s: int = field(default=86400, metadata=_check(
        "an integer from 0 to 4294967295", lambda v: 0 <= v <= 4294967295))
    keepalive_s: int = field(default=30, metadata=_check("an integer from 5 to 3600",
                                                         lambda v: 5 <= v <= 3600))
    reconnect_min_s: float = field(default=0.5, metadata=_seconds(0.05, 60))
    reconnect_max_s: float = field(default=30.0, metadata=_seconds(0.1, 3600))
    telemetry_interval_s: float = field(default=10.0, metadata=_seconds(0.1, 3600))
    inflight_window: int = field(default=32, metadata=_check("an integer from 1 to 1000",
                                                             lambda v: 1 <= v <= 1000))
    ack_wait_s: float = field(default=0.3, metadata=_seconds(0, 10))
    online_ack_p95_s: float = field(default=1.0, metadata=_seconds(0.01, 600))
    ack_window_s: float = field(default=60.0, metadata=_seconds(1, 3600))
    resend_after_s: float = field(default=60.0, metadata=_seconds(0.1, 86400))
    mismatch_after_s: float = field(default=1800.0, metadata=_seconds(0.1, 604800))
    refund_after_s: float = field(default=3600.0, metadata=_seconds(0.1, 604800))
    reconcile_check_s: float = field(default=30.0, metadata=_seconds(0.05, 3600))
    ha_discovery: bool = False

    def password(self, source: str) -> str:
        if not self.password_file:
            return ""
        try:
            return Path(self.password_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{source}: [mqtt] password_file: cannot read "
                              f"{self.password_file}: {exc.strerror}") from None


@dataclass(frozen=True)
class PrintingConfig:
    """The ``[printer]`` section: where the receipt printer is and how the queue watches it.

    >>> PrintingConfig(kind="usb", vendor_id=0x04B8, product_id=0x0202).driver_config().kind
    'usb'
    """

    enabled: bool = True
    kind: str = field(default="network", metadata=_check(
        "one of 'network', 'usb', 'serial'", lambda v: v in ("network", "usb", "serial")))
    host: str = "127.0.0.1"
    port: int = field(default=9100, metadata=_check("an integer from 0 to 65535", _port))
    vendor_id: int = field(default=0, metadata=_check(
        "a USB vendor id from 0 to 0xffff", lambda v: 0 <= v <= 0xFFFF))
    product_id: int = field(default=0, metadata=_check(
        "a USB product id from 0 to 0xffff", lambda v: 0 <= v <= 0xFFFF))
    device: str = "/dev/ttyUSB0"
    baudrate: int = field(default=9600, metadata=_check("a positive integer", _positive))
    profile: str = "default"
    width_mm: int = field(default=80, metadata=_check("58 or 80", lambda v: v in (58, 80)))
    timeout_s: float = field(default=2.0, metadata=_check(
        "a number of seconds from 0.1 to 30", lambda v: 0.1 <= v <= 30))
    status_interval_s: float = field(default=5.0, metadata=_check(
        "a number of seconds from 0.1 to 3600", lambda v: 0.1 <= v <= 3600))
    header: str = ""

    def driver_config(self) -> PrinterConfig:
        """The driver's view of this section (:class:`hw.printer.transport.PrinterConfig`)."""
        from hw.printer.transport import PrinterConfig as DriverConfig

        return DriverConfig(kind=self.kind, host=self.host, port=self.port,  # type: ignore[arg-type]
                            vendor_id=self.vendor_id, product_id=self.product_id,
                            device=self.device, baudrate=self.baudrate, profile=self.profile,
                            width_mm=self.width_mm, timeout_s=self.timeout_s)



def _pin(value: int) -> bool:
    return -1 <= value <= 53


@dataclass(frozen=True)
class ScannerConfig:
    """The ``[scanner]`` section: which input devices are barcode scanners.

    ``names`` and ``ids`` are comma-separated: name substrings and ``vendor:product`` in hex.
    With neither, any device with Enter and the digits counts (a plain keyboard too: name it in
    ``exclude_names``).
    """

    enabled: bool = True
    names: str = ""
    ids: str = field(default="", metadata=_check(
        "comma-separated vendor:product ids in hex, e.g. '05e0:1200'",
        lambda v: all(_usb_id(i) for i in _items(v))))
    exclude_names: str = ""
    scan_timeout_s: float = field(default=0.3, metadata=_seconds(0.02, 10))
    rescan_interval_s: float = field(default=1.0, metadata=_seconds(0.05, 60))

    def match(self) -> Any:
        from hw.scanner import ScannerMatch

        return ScannerMatch(names=_items(self.names), ids=_items(self.ids),
                            exclude_names=_items(self.exclude_names))


@dataclass(frozen=True)
class PanelConfig:
    """The ``[panel]`` section: BCM pin numbers of the buttons and LEDs; -1 for not fitted.

    ``chip``: -1 leaves the pins to gpiozero's default pin factory, which finds a Pi's own GPIO
    chip; a number puts them on ``/dev/gpiochip<chip>`` through lgpio, where on a board that is
    not a Pi (the test VM's gpio-sim chip) the pins are the chip's line numbers.
    """

    enabled: bool = True
    chip: int = field(default=-1, metadata=_check(
        "a gpiochip number from 0 to 255, or -1 for gpiozero's choice", lambda v: -1 <= v <= 255))
    offline_button: int = field(default=17, metadata=_check("a BCM pin 0-53 or -1", _pin))
    reprint_button: int = field(default=27, metadata=_check("a BCM pin 0-53 or -1", _pin))
    shutdown_button: int = field(default=-1, metadata=_check("a BCM pin 0-53 or -1", _pin))
    mode_led: int = field(default=22, metadata=_check("a BCM pin 0-53 or -1", _pin))
    uplink_led: int = field(default=23, metadata=_check("a BCM pin 0-53 or -1", _pin))
    power_led: int = field(default=24, metadata=_check("a BCM pin 0-53 or -1", _pin))
    long_press_s: float = field(default=3.0, metadata=_seconds(0.5, 30))

    def pins(self) -> dict[str, int | None]:
        """The pin map :class:`hw.panel.Panel` takes (None: not fitted)."""
        return {name: (None if pin < 0 else pin) for name, pin in (
            ("offline_button", self.offline_button), ("reprint_button", self.reprint_button),
            ("shutdown_button", self.shutdown_button), ("mode_led", self.mode_led),
            ("uplink_led", self.uplink_led), ("power_led", self.power_led))}


def _i2c_address(value: int) -> bool:
    return 0x03 <= value <= 0x77


def _command_line(value: str) -> bool:
    try:
        return bool(shlex.split(value))
    except ValueError:
        return False


_CHIP = _check('"ina219", "ina226" or "none"', lambda v: v in ("ina219", "ina226", "none"))
_ADDRESS = _check("a 7-bit I2C address from 0x03 to 0x77", _i2c_address)
_POSITIVE = _check("a positive number", _positive)


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
    bus: int = field(default=1, metadata=_check("an I2C bus number from 0 to 255",
                                                lambda v: 0 <= v <= 255))
    mains_chip: str = field(default="ina219", metadata=_CHIP)
    mains_address: int = field(default=0x40, metadata=_ADDRESS)
    mains_shunt_ohms: float = field(default=0.1, metadata=_POSITIVE)
    mains_max_amps: float = field(default=3.2, metadata=_POSITIVE)
    battery_chip: str = field(default="ina226", metadata=_CHIP)
    battery_address: int = field(default=0x41, metadata=_ADDRESS)
    battery_shunt_ohms: float = field(default=0.01, metadata=_POSITIVE)
    battery_max_amps: float = field(default=4.096, metadata=_POSITIVE)
    gauge_address: int = field(default=0x36, metadata=_ADDRESS)
    poll_interval_s: float = field(default=0.1, metadata=_seconds(0.01, 5))
    sample_interval_s: float = field(default=1.0, metadata=_seconds(0.1, 60))
    debounce_polls: int = field(default=2, metadata=_check(
        "an integer from 1 to 50", lambda v: 1 <= v <= 50))
    mains_present_volts: float = field(default=4.5, metadata=_POSITIVE)
    battery_present_volts: float = field(default=2.5, metadata=_POSITIVE)
    low_percent: int = field(default=20, metadata=_check(
        "a whole percent from 1 to 100", lambda v: 1 <= v <= 100))
    critical_percent: int = field(default=8, metadata=_check(
        "a whole percent from 0 to 99", lambda v: 0 <= v <= 99))
    low_minutes: int = field(default=15, metadata=_check(
        "whole minutes from 1 to 1440", lambda v: 1 <= v <= 1440))
    critical_minutes: int = field(default=5, metadata=_check(
        "whole minutes from 0 to 1439", lambda v: 0 <= v <= 1439))
    dead_time_s: float = field(default=30.0, metadata=_seconds(1, 3600))
    shutdown_delay_s: float = field(default=10.0, metadata=_seconds(0, 600))
    step_timeout_s: float = field(default=10.0, metadata=_seconds(1, 120))
    shutdown_command: str = field(default="systemctl poweroff", metadata=_check(
        'a command line such as "systemctl poweroff"', _command_line))
    fail_gpio: int = field(default=-1, metadata=_check("a BCM pin 0-53 or -1", _pin))
    """The BCM pin of a power-fail line (the X728's is 6); -1 for none."""
    fail_gpio_active_high: bool = True

    def __post_init__(self) -> None:
        for key, value, limit in (("critical_percent", self.critical_percent, "low_percent"),
                                  ("critical_minutes", self.critical_minutes, "low_minutes")):
            if value >= getattr(self, limit):
                raise ConfigError(f"[power] {key}: expected below {limit} "
                                  f"({getattr(self, limit)}), got {value}")
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


def _items(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _usb_id(value: str) -> bool:
    vendor, _, product = value.partition(":")
    try:
        return 0 <= int(vendor, 16) <= 0xFFFF and 0 <= int(product, 16) <= 0xFFFF
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    kit: KitConfig = field(default_factory=KitConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    orders: OrdersConfig = field(default_factory=OrdersConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    printer: PrintingConfig = field(default_factory=PrintingConfig)
    scanner: ScannerConfig = field(default_factory=ScannerConfig)
    panel: PanelConfig = field(default_factory=PanelConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    source: str = "(defaults)"

    @property
    def kit_id(self) -> str:
        return self.kit.id or machine_kit_id()

    def staff_token(self) -> str:
        """The token from ``[http] staff_token`` or the file ``[http] staff_token_file``."""
        if self.http.staff_token:
            return self.http.staff_token
        if self.http.staff_token_file:
            path = Path(self.http.staff_token_file)
            try:
                token = path.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{self.source}: [http] staff_token_file: cannot read "
                                  f"{path}: {exc.strerror}") from None
            if len(token) < 16:
                raise ConfigError(f"{self.source}: [http] staff_token_file: {path} must hold a "
                                  f"token of at least 16 characters")
            return token
        return ""


_SECTION_TYPES = {"kit": KitConfig, "http": HttpConfig, "orders": OrdersConfig,
                  "mqtt": MqttConfig, "printer": PrintingConfig, "scanner": ScannerConfig,
                  "panel": PanelConfig, "power": PowerConfig}


def _describe(kind: type) -> str:
    return {int: "an integer", str: "a string", bool: "true or false", float: "a number"}[kind]


def _parse_section(name: str, raw: Any, source: str) -> Any:
    cls = _SECTION_TYPES[name]
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: [{name}]: expected a table of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{source}: [{name}] {key}: unknown key; expected one of "
                              f"{', '.join(sorted(fields))}")
        spec = fields[key]
        kind = {"int": int, "str": str, "bool": bool, "float": float}[spec.type]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # "30" seconds is as good as "30.0"
        type_ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        check = spec.metadata.get("check")
        if not type_ok:
            expected = check[0] if check else _describe(kind)
            raise ConfigError(f"{source}: [{name}] {key}: expected {expected}, got {value!r}")
        if check and not check[1](value):
            raise ConfigError(f"{source}: [{name}] {key}: expected {check[0]}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except ConfigError as exc:  # a check across keys of the section
        raise ConfigError(f"{source}: {exc}") from None


def parse_config(data: dict[str, Any], source: str = "(inline)") -> Config:
    """Check a parsed TOML document and build the :class:`Config`."""
    sections = {}
    for name, raw in data.items():
        if name not in _SECTION_TYPES:
            raise ConfigError(f"{source}: [{name}]: unknown section; expected one of "
                              f"{', '.join(sorted(_SECTION_TYPES))}")
        sections[name] = _parse_section(name, raw, source)
    return Config(**sections, source=source)


def load_config(path: str | os.PathLike[str] | None, *, required: bool = True) -> Config:
    """Read and check a config file.

    ``path`` None means ``$DROPKIT_CONFIG`` or the default path. A missing file is an error when
    ``required``; otherwise (``dropkit sim``) the defaults apply.
    """
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        path = Path(env) if env else DEFAULT_CONFIG_PATH
        required = required or bool(env)
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such config file") from None
        return Config()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = parse_config(data, source=str(path))
    if config.orders.manifest and not os.path.isabs(config.orders.manifest):
        # A relative manifest path is read beside the config file, wherever the daemon runs.
        manifest = str(path.parent / config.orders.manifest)
        config = dataclasses.replace(config, orders=dataclasses.replace(
            config.orders, manifest=manifest))
    return config


def machine_kit_id() -> str:
    """A stable kit id from the Pi's serial number, or from the machine id elsewhere."""
    for candidate in ("/proc/device-tree/serial-number", "/etc/machine-id",
                      "/var/lib/dbus/machine-id"):
        try:
            raw = Path(candidate).read_bytes().strip(b"\x00\n ")
        except OSError:
            continue
        if raw:
            return "kit-" + hashlib.sha256(raw).hexdigest()[:8]
    return "kit-" + hashlib.sha256(os.uname().nodename.encode()).hexdigest()[:8]
