"""A virtual HID barcode scanner at the evdev seam.

:class:`VirtualScanner` produces the ``InputEvent`` stream a real USB scanner makes for a barcode
(Shift around capitals and shifted symbols, SYN_REPORT after each event group, timestamps at a
configurable key rate), plus junk, half scans and Caps Lock. :class:`FakeInputDevice` plays such
streams to :class:`hw.scanner.ScannerWatcher` the way an ``evdev.InputDevice`` would, unplug
included::

    device = FakeInputDevice("Virtual Barcode Scanner", "/dev/input/event90")
    device.send(device.scanner.scan("4006381333931"))
    device.unplug()  # the read loop then raises OSError(19, 'No such device')
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import AsyncIterator, Iterable, Mapping

from evdev import DeviceInfo, InputEvent, ecodes

from hw.scanner import TERMINATOR_KEYS, US_LAYOUT, KeyLayout, Layout, key_code

_MICROSECONDS = 1_000_000


class VirtualScanner:
    """Types barcodes as evdev events, the way a USB HID scanner does.

    Each key press, key release, Shift press and Shift release is one event group (the EV_KEY
    event and a SYN_REPORT) ``key_interval`` seconds after the previous group; capitals and
    shifted symbols come between ``shift_key`` press and release. Timestamps start at
    ``start`` (default: now) and only grow; :meth:`idle` moves them on without events.
    """

    def __init__(
        self,
        layout: Layout = US_LAYOUT,
        key_interval: float = 0.002,
        start: float | None = None,
        shift_key: str = "KEY_LEFTSHIFT",
    ) -> None:
        self.layout = KeyLayout(layout)
        self.shift_code = key_code(shift_key)
        self.key_interval = key_interval
        self.caps_lock = False
        self._clock_us = round((time.time() if start is None else start) * _MICROSECONDS)
        self._keystrokes: dict[str, tuple[int, bool]] = {}
        for code, (plain, shifted) in self.layout.characters.items():
            self._keystrokes.setdefault(plain, (code, False))
            self._keystrokes.setdefault(shifted, (code, True))

    @property
    def characters(self) -> str:
        """Every character this scanner can type."""
        return "".join(sorted(self._keystrokes))

    def scan(self, text: str, terminator: str = "KEY_ENTER") -> list[InputEvent]:
        """A complete scan: the text, then the terminator key."""
        if key_code(terminator) not in TERMINATOR_KEYS:
            raise ValueError(f"{terminator} does not end a scan")
        return [*self.half_scan(text), *self.tap(terminator)]

    def half_scan(self, text: str) -> list[InputEvent]:
        """The text with no terminator, as when a scan is cut short."""
        events: list[InputEvent] = []
        for character in text:
            events += self._type(character)
        return events

    def junk_scan(self, text: str, junk_key: str = "KEY_F13") -> list[InputEvent]:
        """A scan with a key the layout does not map (``junk_key``) in the middle of the text."""
        middle = len(text) // 2
        return [
            *self.half_scan(text[:middle]),
            *self.tap(junk_key),
            *self.half_scan(text[middle:]),
            *self.tap("KEY_ENTER"),
        ]

    def toggle_caps_lock(self) -> list[InputEvent]:
        """Tap Caps Lock and type accordingly from now on (a Caps-Lock-aware scanner)."""
        self.caps_lock = not self.caps_lock
        return self.tap("KEY_CAPSLOCK")

    def tap(self, key: str) -> list[InputEvent]:
        """Press and release one key by evdev name; the scanner's own state does not change."""
        return self._press_release(key_code(key))

    def idle(self, seconds: float) -> None:
        """Let time pass: the next event comes ``seconds`` later than it would have."""
        self._clock_us += round(seconds * _MICROSECONDS)

    def _type(self, character: str) -> list[InputEvent]:
        try:
            code, shift = self._keystrokes[character]
        except KeyError:
            raise ValueError(f"the layout cannot type {character!r}") from None
        if code in self.layout.letters and self.caps_lock:
            shift = not shift
        if not shift:
            return self._press_release(code)
        # Unpacked left to right, so the timestamps follow the key order.
        return [
            *self._group(self.shift_code, 1),
            *self._press_release(code),
            *self._group(self.shift_code, 0),
        ]

    def _press_release(self, code: int) -> list[InputEvent]:
        return [*self._group(code, 1), *self._group(code, 0)]

    def _group(self, code: int, value: int) -> list[InputEvent]:
        self._clock_us += round(self.key_interval * _MICROSECONDS)
        sec, usec = divmod(self._clock_us, _MICROSECONDS)
        return [
            InputEvent(sec, usec, ecodes.EV_KEY, code, value),
            InputEvent(sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        ]


class FakeInputDevice:
    """An ``evdev.InputDevice`` stand-in that replays events sent to it.

    ``capabilities()`` reports the keys of its scanner's layout plus Shift, Caps Lock and the
    terminators, unless ``capabilities`` is given (e.g. a mouse, to test matching). Use it inside
    a running asyncio loop.
    """

    def __init__(
        self,
        name: str = "Virtual Barcode Scanner",
        path: str = "/dev/input/event90",
        vendor: int = 0x05E0,
        product: int = 0x1200,
        scanner: VirtualScanner | None = None,
        capabilities: Mapping[int, list[int]] | None = None,
    ) -> None:
        self.name = name
        self.path = path
        self.info = DeviceInfo(bustype=ecodes.BUS_USB, vendor=vendor, product=product, version=1)
        self.scanner = scanner or VirtualScanner()
        self.grabbed = False
        self.closed = False
        self._capabilities = (
            dict(capabilities)
            if capabilities is not None
            else {
                ecodes.EV_SYN: [ecodes.SYN_REPORT],
                ecodes.EV_KEY: sorted(
                    {
                        *self.scanner.layout.characters,
                        *TERMINATOR_KEYS,
                        ecodes.KEY_LEFTSHIFT,
                        ecodes.KEY_RIGHTSHIFT,
                        ecodes.KEY_CAPSLOCK,
                    }
                ),
            }
        )
        self._pending: asyncio.Queue[InputEvent | None] = asyncio.Queue()  # None: unplugged

    def capabilities(self) -> dict[int, list[int]]:
        """Event types and codes the device can send, like ``InputDevice.capabilities()``."""
        return {kind: list(codes) for kind, codes in self._capabilities.items()}

    def grab(self) -> None:
        """Take the device for this reader alone; a second grab fails as in evdev."""
        if self.grabbed:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        self.grabbed = True

    def ungrab(self) -> None:
        """Release the grab; releasing a device not grabbed fails as in evdev."""
        if not self.grabbed:
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        self.grabbed = False

    def close(self) -> None:
        """Close the device; closing also releases a grab."""
        self.closed = True
        self.grabbed = False

    def send(self, events: Iterable[InputEvent]) -> None:
        """Queue events for the read loop, as if the scanner had just typed them."""
        for event in events:
            self._pending.put_nowait(event)

    def unplug(self) -> None:
        """Pull the plug: after the queued events the read loop raises ENODEV."""
        self._pending.put_nowait(None)

    async def async_read_loop(self) -> AsyncIterator[InputEvent]:
        """Yield queued events; raise OSError(19, 'No such device') once unplugged."""
        while True:
            event = await self._pending.get()
            if event is None:
                raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))
            yield event
