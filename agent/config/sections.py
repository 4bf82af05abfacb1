"""The config's sections but ``[power]``: each key with its default and its check."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.config.checks import (
    BCM_PIN,
    ConfigError,
    between,
    check,
    items,
    mqtt_url,
    positive,
    ranged,
    seconds,
    usb_id,
)

if TYPE_CHECKING:
    from hw.printer import PrinterConfig


@dataclass(frozen=True)
class KitConfig:
    id: str = field(default="", metadata=check(
        "1 to 64 letters, digits, '-' or '_', and not 'hq' (HQ's own topics are <prefix>/hq/)",
        lambda v: v == "" or (len(v) <= 64 and v != "hq"
                              and v.replace("-", "").replace("_", "").isalnum())))
    name: str = "Drop kit"
    state_dir: str = "/var/lib/dropkit"
    storage_warn_mb: float = field(default=64.0,
                                   metadata=ranged("a number of megabytes", 0, 1_000_000))
    retention_days: float = field(default=14.0, metadata=check(
        "a number of days from 0 (keep everything) to 3650", between(0, 3650)))


@dataclass(frozen=True)
class HttpConfig:
    host: str = "0.0.0.0"
    port: int = field(default=8080, metadata=ranged("an integer", 0, 65535))
    staff_token: str = field(default="", metadata=check(
        "a token of at least 16 characters", lambda v: v == "" or len(v) >= 16))
    staff_token_file: str = ""
    max_body_bytes: int = field(default=16384, metadata=ranged("an integer", 1024, 1048576))
    staff_failures_per_minute: int = field(default=10, metadata=check(
        "a positive integer", positive))
    max_connections: int = field(default=512, metadata=ranged("an integer", 8, 65536))
    max_connections_per_client: int = field(default=64, metadata=ranged("an integer", 1, 65536))
    request_timeout_s: float = field(default=10.0, metadata=seconds(0.5, 300))


@dataclass(frozen=True)
class OrdersConfig:
    manifest: str = ""
    max_lines: int = field(default=20, metadata=ranged("an integer", 1, 200))
    max_qty: int = field(default=99, metadata=ranged("an integer", 1, 10000))
    hold_minutes: float = field(default=10.0, metadata=ranged("a number of minutes", 0.05, 1440))
    """How long a customer's reservation holds its stock for staff to take the payment."""


@dataclass(frozen=True)
class MqttConfig:
    url: str = field(default="", metadata=check(
        "mqtt://host[:port] or mqtts://host[:port] (empty: uplink off)", mqtt_url))
    client_id: str = ""
    username: str = ""
    password_file: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    protocol: str = field(default="5", metadata=check('"5" or "3.1.1"',
                                                       lambda v: v in ("5", "3.1.1")))
    topic_prefix: str = field(default="dropkit", metadata=check(
        "a topic prefix without wildcards", lambda v: bool(v) and not set(v) & set("+#")))
    session_expiry_s: int = field(default=86400, metadata=ranged("an integer", 0, 4294967295))
    keepalive_s: int = field(default=30, metadata=ranged("an integer", 5, 3600))
    reconnect_min_s: float = field(default=0.5, metadata=seconds(0.05, 60))
    reconnect_max_s: float = field(default=5.0, metadata=seconds(0.1, 3600))
    telemetry_interval_s: float = field(default=10.0, metadata=seconds(0.1, 3600))
    inflight_window: int = field(default=32, metadata=ranged("an integer", 1, 1000))
    ack_wait_s: float = field(default=0.3, metadata=seconds(0, 10))
    online_ack_p95_s: float = field(default=1.0, metadata=seconds(0.01, 600))
    ack_window_s: float = field(default=60.0, metadata=seconds(1, 3600))
    resend_after_s: float = field(default=60.0, metadata=seconds(0.1, 86400))
    mismatch_after_s: float = field(default=1800.0, metadata=seconds(0.1, 604800))
    refund_after_s: float = field(default=3600.0, metadata=seconds(0.1, 604800))
    reconcile_check_s: float = field(default=30.0, metadata=seconds(0.05, 3600))
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
    kind: str = field(default="network", metadata=check(
        "one of 'network', 'usb', 'serial'", lambda v: v in ("network", "usb", "serial")))
    host: str = "127.0.0.1"
    port: int = field(default=9100, metadata=ranged("an integer", 0, 65535))
    vendor_id: int = field(default=0, metadata=check("a USB vendor id from 0 to 0xffff",
                                                          between(0, 0xFFFF)))
    product_id: int = field(default=0, metadata=check("a USB product id from 0 to 0xffff",
                                                           between(0, 0xFFFF)))
    device: str = "/dev/ttyUSB0"
    baudrate: int = field(default=9600, metadata=check("a positive integer", positive))
    profile: str = "default"
    width_mm: int = field(default=80, metadata=check("58 or 80", lambda v: v in (58, 80)))
    timeout_s: float = field(default=2.0, metadata=seconds(0.1, 30))
    status_interval_s: float = field(default=5.0, metadata=seconds(0.1, 3600))

    def driver_config(self) -> PrinterConfig:
        """The driver's view of this section (:class:`hw.printer.transport.PrinterConfig`)."""
        from hw.printer.transport import PrinterConfig as DriverConfig

        return DriverConfig(kind=self.kind, host=self.host, port=self.port,  # type: ignore[arg-type]
                            vendor_id=self.vendor_id, product_id=self.product_id,
                            device=self.device, baudrate=self.baudrate, profile=self.profile,
                            width_mm=self.width_mm, timeout_s=self.timeout_s)


@dataclass(frozen=True)
class ScannerConfig:
    """The ``[scanner]`` section: which input devices are barcode scanners.

    ``names`` and ``ids`` are comma-separated: name substrings and ``vendor:product`` in hex.
    With neither, any device with Enter and the digits counts (a plain keyboard too: name it in
    ``exclude_names``).
    """

    enabled: bool = True
    names: str = ""
    ids: str = field(default="", metadata=check(
        "comma-separated vendor:product ids in hex, e.g. '05e0:1200'",
        lambda v: all(usb_id(i) for i in items(v))))
    exclude_names: str = ""
    scan_timeout_s: float = field(default=0.3, metadata=seconds(0.02, 10))
    rescan_interval_s: float = field(default=1.0, metadata=seconds(0.05, 60))

    def match(self) -> Any:
        from hw.scanner import ScannerMatch

        return ScannerMatch(names=items(self.names), ids=items(self.ids),
                            exclude_names=items(self.exclude_names))


@dataclass(frozen=True)
class PanelConfig:
    """The ``[panel]`` section: BCM pin numbers of the buttons and LEDs; -1 for not fitted.

    ``chip``: -1 leaves the pins to gpiozero's default pin factory, which finds a Pi's own GPIO
    chip; a number puts them on ``/dev/gpiochip<chip>`` through lgpio, where on a board that is
    not a Pi (the test VM's gpio-sim chip) the pins are the chip's line numbers.
    """

    enabled: bool = True
    chip: int = field(default=-1, metadata=check(
        "a gpiochip number from 0 to 255, or -1 for gpiozero's choice", between(-1, 255)))
    offline_button: int = field(default=17, metadata=BCM_PIN)
    reprint_button: int = field(default=27, metadata=BCM_PIN)
    shutdown_button: int = field(default=-1, metadata=BCM_PIN)
    mode_led: int = field(default=22, metadata=BCM_PIN)
    uplink_led: int = field(default=23, metadata=BCM_PIN)
    power_led: int = field(default=24, metadata=BCM_PIN)
    long_press_s: float = field(default=3.0, metadata=seconds(0.5, 30))

    def pins(self) -> dict[str, int | None]:
        """The pin map :class:`hw.panel.Panel` takes (None: not fitted)."""
        return {name: (None if pin < 0 else pin) for name, pin in (
            ("offline_button", self.offline_button), ("reprint_button", self.reprint_button),
            ("shutdown_button", self.shutdown_button), ("mode_led", self.mode_led),
            ("uplink_led", self.uplink_led), ("power_led", self.power_led))}


@dataclass(frozen=True)
class NutConfig:
    """``[nut]``: the read-only NUT network server (upsd's protocol), off unless enabled."""

    enabled: bool = False
    listen: str = "127.0.0.1"
    port: int = field(default=3493, metadata=ranged("an integer", 0, 65535))
    ups_name: str = field(default="kit", metadata=check(
        "1 to 32 letters, digits, '-' or '_'",
        lambda v: 0 < len(v) <= 32 and v.replace("-", "").replace("_", "").isalnum()))
    max_connections: int = field(default=8, metadata=ranged("an integer", 1, 64))
    idle_timeout_s: float = field(default=60.0, metadata=seconds(1, 3600))
