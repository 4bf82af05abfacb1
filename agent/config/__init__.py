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

from agent.config.checks import ConfigError
from agent.config.power import PowerConfig
from agent.config.sections import (
    HttpConfig,
    KitConfig,
    MqttConfig,
    OrdersConfig,
    PanelConfig,
    PrintingConfig,
    ReceiptConfig,
    ScannerConfig,
)

__all__ = ["Config", "ConfigError", "HttpConfig", "KitConfig", "MqttConfig", "OrdersConfig",
           "PanelConfig", "PowerConfig", "PrintingConfig", "ReceiptConfig", "ScannerConfig",
           "load_config", "machine_kit_id", "parse_config"]

DEFAULT_CONFIG_PATH = Path("/etc/dropkit/agent.toml")
CONFIG_ENV = "DROPKIT_CONFIG"


@dataclass(frozen=True)
class Config:
    kit: KitConfig = field(default_factory=KitConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    orders: OrdersConfig = field(default_factory=OrdersConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    printer: PrintingConfig = field(default_factory=PrintingConfig)
    receipt: ReceiptConfig = field(default_factory=ReceiptConfig)
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
                  "mqtt": MqttConfig, "printer": PrintingConfig, "receipt": ReceiptConfig,
                  "scanner": ScannerConfig, "panel": PanelConfig, "power": PowerConfig}


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
