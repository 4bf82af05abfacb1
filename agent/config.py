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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_CONFIG_PATH = Path("/etc/dropkit/agent.toml")
CONFIG_ENV = "DROPKIT_CONFIG"


class ConfigError(ValueError):
    """A configuration the agent refuses to start with; the message is one line."""


def _check(message: str, test: Any) -> dict[str, Any]:
    return {"check": (message, test)}


def _port(value: int) -> bool:
    return 0 <= value <= 65535


def _positive(value: int) -> bool:
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
class Config:
    kit: KitConfig = field(default_factory=KitConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    orders: OrdersConfig = field(default_factory=OrdersConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
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
                  "mqtt": MqttConfig}


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
    return cls(**values)


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
