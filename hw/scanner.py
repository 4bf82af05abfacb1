"""HID barcode scanners over python-evdev: key decoding, discovery, grab and hot-plug.

A USB barcode scanner is a keyboard that types the barcode and presses Enter. This module turns
its evdev key events into :class:`Scan` facts and follows scanners as they come and go; what a
scan means is the agent's business.

- :class:`ScanDecoder` decodes one device's ``InputEvent`` stream (Shift, Caps Lock, a
  configurable layout, half scans and junk dropped with a log line).
- :class:`ScannerMatch` says which input devices are scanners.
- :class:`ScannerWatcher` reads every matching device on the running asyncio loop, grabs it so
  scans do not type into the console, and rescans ``/dev/input`` to follow hot-plug.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import evdev
from evdev import DeviceInfo, InputEvent, ecodes

log = logging.getLogger(__name__)

Layout = Mapping[str, tuple[str, str]]
"""A keyboard layout: evdev key name (``"KEY_A"``) → (plain character, shifted character)."""

_US_SYMBOLS = {
    "KEY_MINUS": ("-", "_"),
    "KEY_EQUAL": ("=", "+"),
    "KEY_LEFTBRACE": ("[", "{"),
    "KEY_RIGHTBRACE": ("]", "}"),
    "KEY_BACKSLASH": ("\\", "|"),
    "KEY_SEMICOLON": (";", ":"),
    "KEY_APOSTROPHE": ("'", '"'),
    "KEY_COMMA": (",", "<"),
    "KEY_DOT": (".", ">"),
    "KEY_SLASH": ("/", "?"),
    "KEY_GRAVE": ("`", "~"),
    "KEY_SPACE": (" ", " "),
}
US_LAYOUT: Layout = {
    **{f"KEY_{d}": (d, shifted) for d, shifted in zip("1234567890", "!@#$%^&*()", strict=True)},
    **{f"KEY_{letter}": (letter.lower(), letter) for letter in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **_US_SYMBOLS,
}
"""The US keyboard layout most scanners ship with."""

SHIFT_KEYS = frozenset({ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT})
TERMINATOR_KEYS = frozenset({ecodes.KEY_ENTER, ecodes.KEY_KPENTER, ecodes.KEY_TAB})
_KEY_UP = 0
_KEY_DOWN = 1


def key_code(name: str) -> int:
    """The evdev key code for a key name such as ``"KEY_A"``; ValueError if there is none."""
    code = ecodes.ecodes.get(name)
    if code is None or not name.startswith("KEY_"):
        raise ValueError(f"unknown evdev key name {name!r}")
    return code


def key_name(code: int) -> str:
    """A readable name for a key code (the first of its aliases), for log lines."""
    names = ecodes.KEY.get(code, f"KEY_0x{code:02X}")
    return names if isinstance(names, str) else names[0]


class KeyLayout:
    """A :data:`Layout` compiled to key codes.

    Caps Lock applies to letters only: keys whose shifted character is the upper case of the
    plain one.
    """

    def __init__(self, layout: Layout) -> None:
        self.characters: dict[int, tuple[str, str]] = {
            key_code(name): (plain, shifted) for name, (plain, shifted) in layout.items()
        }
        self.letters: frozenset[int] = frozenset(
            code
            for code, (plain, shifted) in self.characters.items()
            if plain.isalpha() and plain != shifted == plain.upper()
        )

    def character(self, code: int, shift: bool, caps_lock: bool) -> str | None:
        """The character a key types, or None if the layout does not map it."""
        pair = self.characters.get(code)
        if pair is None:
            return None
        shifted = shift != caps_lock if code in self.letters else shift
        return pair[1] if shifted else pair[0]


@dataclass(frozen=True)
class Scan:
    """One complete barcode read: its text, the device name and the terminator's timestamp."""

    text: str
    device: str
    ts: float


class ScanDecoder:
    """Turns one device's evdev events into :class:`Scan` results.

    Only EV_KEY events count (EV_SYN and EV_MSC are ignored); a press or an autorepeat types.
    A scan ends on Enter, keypad Enter or Tab. A scan with no key event for ``timeout`` seconds
    (by event timestamps) is a half scan and is dropped when the next key arrives; a scan with
    a key the layout does not map is junk and is dropped at its terminator; an empty scan is
    ignored. Caps Lock starts off and is tracked per decoder.
    """

    def __init__(self, device: str, layout: Layout = US_LAYOUT, timeout: float = 0.3) -> None:
        self.device = device
        self.timeout = timeout
        self._layout = KeyLayout(layout)
        self._shift_keys_down: set[int] = set()
        self._caps_lock = False
        self._text: list[str] = []
        self._junk_keys: list[str] = []
        self._last_key_ts: float | None = None

    def feed(self, event: InputEvent) -> Scan | None:
        """Consume one event; return a Scan when it completes a valid one."""
        if event.type == ecodes.EV_SYN and event.code == ecodes.SYN_DROPPED:
            # The kernel's buffer overflowed (the reader fell behind): keys of this scan are
            # lost, so it is junk whatever follows. A lost Shift release would shift every later
            # scan: a scanner holds no key between scans, so none is down now.
            self._junk_keys.append("SYN_DROPPED")
            self._shift_keys_down.clear()
            return None
        if event.type != ecodes.EV_KEY:
            return None
        ts = event.timestamp()
        self._drop_half_scan(ts)
        self._last_key_ts = ts
        code, value = event.code, event.value
        if code in SHIFT_KEYS:
            if value == _KEY_UP:
                self._shift_keys_down.discard(code)
            else:
                self._shift_keys_down.add(code)
            return None
        if value == _KEY_UP:
            return None
        if code == ecodes.KEY_CAPSLOCK:
            if value == _KEY_DOWN:
                self._caps_lock = not self._caps_lock
            return None
        if code in TERMINATOR_KEYS:
            return self._finish(ts)
        character = self._layout.character(code, bool(self._shift_keys_down), self._caps_lock)
        if character is None:
            self._junk_keys.append(key_name(code))
        else:
            self._text.append(character)
        return None

    def _drop_half_scan(self, ts: float) -> None:
        pending = self._text or self._junk_keys
        if pending and self._last_key_ts is not None and ts - self._last_key_ts > self.timeout:
            log.warning(
                "scanner %s: dropped half scan %r (no terminator within %.2f s)",
                self.device,
                "".join(self._text),
                self.timeout,
            )
            self._reset_scan()

    def _finish(self, ts: float) -> Scan | None:
        text, junk_keys = "".join(self._text), self._junk_keys
        self._reset_scan()
        if junk_keys:
            log.warning(
                "scanner %s: dropped scan %r with unmapped keys %s",
                self.device,
                text,
                ", ".join(junk_keys),
            )
            return None
        if not text:
            return None
        return Scan(text=text, device=self.device, ts=ts)

    def _reset_scan(self) -> None:
        self._text = []
        self._junk_keys = []


class ScannerDevice(Protocol):
    """What the watcher needs of an input device; ``evdev.InputDevice`` has all of it."""

    name: str
    path: str
    info: DeviceInfo

    def capabilities(self) -> dict[int, list[int]]: ...

    def grab(self) -> None: ...

    def async_read_loop(self) -> AsyncIterator[InputEvent]: ...

    def close(self) -> None: ...


_DIGIT_KEYS = frozenset(key_code(f"KEY_{digit}") for digit in "0123456789")


@dataclass(frozen=True)
class ScannerMatch:
    """Which input devices are scanners.

    With ``names`` (case-insensitive substrings of the device name) or ``ids`` (``"vendor:product"``
    in hex, e.g. ``"05e0:1200"``) a device is a scanner if it matches any of them. With neither,
    the automatic rule applies: any device whose keys include Enter and the digits 0-9. That rule
    also takes a plain USB keyboard, so name the scanners (or list the keyboard in
    ``exclude_names``) on a kit that has one. A device whose name contains one of
    ``exclude_names`` is never a scanner.
    """

    names: tuple[str, ...] = ()
    ids: tuple[str, ...] = ()
    exclude_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for usb_id in self.ids:
            _parse_usb_id(usb_id)

    def matches(self, device: ScannerDevice) -> bool:
        """True if the device should be read as a scanner."""
        name = device.name.lower()
        if any(excluded.lower() in name for excluded in self.exclude_names):
            return False
        if self.names or self.ids:
            device_id = (device.info.vendor, device.info.product)
            return any(wanted.lower() in name for wanted in self.names) or any(
                _parse_usb_id(usb_id) == device_id for usb_id in self.ids
            )
        keys = set(device.capabilities().get(ecodes.EV_KEY, ()))
        return ecodes.KEY_ENTER in keys and keys >= _DIGIT_KEYS


def _parse_usb_id(usb_id: str) -> tuple[int, int]:
    vendor, separator, product = usb_id.partition(":")
    try:
        if separator:
            return int(vendor, 16), int(product, 16)
    except ValueError:
        pass
    raise ValueError(f"scanner id {usb_id!r} is not vendor:product in hex, e.g. '05e0:1200'")


def open_input_devices() -> list[ScannerDevice]:
    """Open every readable device under /dev/input (the watcher's default discovery)."""
    devices: list[ScannerDevice] = []
    for path in evdev.list_devices():
        try:
            devices.append(evdev.InputDevice(path))
        except OSError as error:  # gone between listing and opening, or not ours to read
            log.debug("cannot open %s: %s", path, error)
    return devices


class ScannerWatcher:
    """Reads every scanner at once on the running asyncio loop and follows hot-plug.

    Every ``rescan_interval`` seconds ``discover()`` lists the input devices; a matching one not
    yet read is grabbed, reported with ``on_device(name, True)`` and read until it fails (an
    unplug raises ENODEV), then reported with ``on_device(name, False)``. Devices the watcher
    does not keep are closed. Each completed scan goes to ``on_scan``. A callback that raises is
    logged and the watcher carries on.
    """

    def __init__(
        self,
        on_scan: Callable[[Scan], object],
        on_device: Callable[[str, bool], object],
        *,
        match: ScannerMatch | None = None,
        discover: Callable[[], Iterable[ScannerDevice]] = open_input_devices,
        rescan_interval: float = 1.0,
        layout: Layout = US_LAYOUT,
        scan_timeout: float = 0.3,
    ) -> None:
        self.on_scan = on_scan
        self.on_device = on_device
        self.match = match or ScannerMatch()
        self.discover = discover
        self.rescan_interval = rescan_interval
        self.layout = layout
        self.scan_timeout = scan_timeout
        self._readers: dict[str, tuple[ScannerDevice, asyncio.Task[None]]] = {}

    @property
    def devices(self) -> list[str]:
        """Names of the scanners being read now."""
        return [device.name for device, _ in self._readers.values()]

    async def run(self) -> None:
        """Watch until cancelled; on cancellation stop every reader and close its device."""
        try:
            while True:
                self._rescan()
                await asyncio.sleep(self.rescan_interval)
        finally:
            tasks = [task for _, task in self._readers.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _rescan(self) -> None:
        for device in self.discover():
            reader = self._readers.get(device.path)
            if reader is not None and reader[0] is device:
                continue
            if reader is None and self.match.matches(device):
                self._adopt(device)
            else:
                _close_quietly(device)

    def _adopt(self, device: ScannerDevice) -> None:
        try:
            device.grab()
        except OSError as error:
            log.warning(
                "scanner %s (%s): grab failed (%s); reading it anyway, scans may reach the console",
                device.name,
                device.path,
                error,
            )
        log.info("scanner %s (%s) present", device.name, device.path)
        task = asyncio.get_running_loop().create_task(
            self._read(device), name=f"scanner {device.path}"
        )
        self._readers[device.path] = (device, task)
        _call_safely(self.on_device, device.name, True)

    async def _read(self, device: ScannerDevice) -> None:
        decoder = ScanDecoder(device.name, self.layout, self.scan_timeout)
        try:
            async for event in device.async_read_loop():
                scan = decoder.feed(event)
                if scan is not None:
                    _call_safely(self.on_scan, scan)
        except OSError as error:
            if error.errno == errno.ENODEV:
                log.info("scanner %s (%s) gone", device.name, device.path)
            else:
                log.warning("scanner %s (%s) failed: %s", device.name, device.path, error)
        finally:
            del self._readers[device.path]
            _close_quietly(device)
        _call_safely(self.on_device, device.name, False)


def _call_safely(callback: Callable[..., object], *args: object) -> None:
    """Run a fact callback; a bug in it is logged and must not stop the watcher."""
    try:
        callback(*args)
    except Exception:
        log.exception("scanner callback %r failed for %r", callback, args)


def _close_quietly(device: ScannerDevice) -> None:
    try:
        device.close()
    except OSError as error:
        log.debug("closing %s: %s", device.path, error)
