"""Scanner driver: decoding via the virtual scanner, matching, the watcher on fake devices."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

import pytest
from evdev import InputEvent, ecodes

from hw.scanner import US_LAYOUT, Scan, ScanDecoder, ScannerMatch, ScannerWatcher
from simulators.scanner import FakeInputDevice, VirtualScanner

BARCODE_CHARACTERS = VirtualScanner().characters
TERMINATORS = ("KEY_ENTER", "KEY_KPENTER", "KEY_TAB")


def decode(events: Iterable[InputEvent], decoder: ScanDecoder | None = None) -> list[str]:
    decoder = decoder or ScanDecoder("test scanner")
    return [scan.text for event in events if (scan := decoder.feed(event)) is not None]


def random_barcodes(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(BARCODE_CHARACTERS, k=rng.randint(1, 48))) for _ in range(count)]


def test_layout_covers_digits_letters_space_and_symbols() -> None:
    expected = set("0123456789 -=[]\\;',./`" + '_+{}|:"<>?~!@#$%^&*()')
    expected |= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert set(BARCODE_CHARACTERS) == expected


def test_thousand_random_barcodes_decode_exactly() -> None:
    barcodes = random_barcodes(1000, seed=20240601)
    scanner = VirtualScanner(start=1_700_000_000.0)
    rng = random.Random(7)
    events = [e for code in barcodes for e in scanner.scan(code, rng.choice(TERMINATORS))]
    assert decode(events) == barcodes


def test_right_shift_and_slow_key_rate_decode_exactly() -> None:
    barcodes = random_barcodes(50, seed=3)
    scanner = VirtualScanner(key_interval=0.05, shift_key="KEY_RIGHTSHIFT")
    assert decode(e for code in barcodes for e in scanner.scan(code)) == barcodes


def test_event_stream_looks_like_a_hid_keyboard() -> None:
    scanner = VirtualScanner(start=100.0, key_interval=0.01)
    events = scanner.scan("A")
    key_events = [(e.code, e.value) for e in events if e.type == ecodes.EV_KEY]
    assert key_events == [
        (ecodes.KEY_LEFTSHIFT, 1),
        (ecodes.KEY_A, 1),
        (ecodes.KEY_A, 0),
        (ecodes.KEY_LEFTSHIFT, 0),
        (ecodes.KEY_ENTER, 1),
        (ecodes.KEY_ENTER, 0),
    ]
    assert all(e.type == ecodes.EV_SYN and e.code == ecodes.SYN_REPORT for e in events[1::2])
    timestamps = [e.timestamp() for e in events[::2]]
    assert timestamps == pytest.approx([100.01 + 0.01 * i for i in range(6)])
    assert all(isinstance(e.sec, int) and 0 <= e.usec < 1_000_000 for e in events)


def test_caps_lock_aware_scanner_decodes_exactly() -> None:
    barcodes = random_barcodes(200, seed=11)
    scanner = VirtualScanner()
    events = [*scanner.toggle_caps_lock(), *(e for code in barcodes for e in scanner.scan(code))]
    assert decode(events) == barcodes


def test_caps_lock_capitalises_letters_only_and_toggles() -> None:
    scanner = VirtualScanner()
    events = [
        *scanner.tap("KEY_CAPSLOCK"),
        *scanner.scan("aB-1;z"),
        *scanner.tap("KEY_CAPSLOCK"),
        *scanner.scan("aB-1;z"),
    ]
    assert decode(events) == ["Ab-1;Z", "aB-1;z"]


def test_autorepeat_types_again_and_other_event_types_are_ignored() -> None:
    events = [
        InputEvent(1, 0, ecodes.EV_MSC, ecodes.MSC_SCAN, 0x70004),
        InputEvent(1, 0, ecodes.EV_KEY, ecodes.KEY_7, 1),
        InputEvent(1, 1000, ecodes.EV_KEY, ecodes.KEY_7, 2),
        InputEvent(1, 2000, ecodes.EV_KEY, ecodes.KEY_7, 0),
        InputEvent(1, 2000, ecodes.EV_SYN, ecodes.SYN_REPORT, 0),
        InputEvent(1, 3000, ecodes.EV_KEY, ecodes.KEY_ENTER, 1),
    ]
    decoder = ScanDecoder("repeat scanner")
    scans = [scan for e in events if (scan := decoder.feed(e)) is not None]
    assert scans == [Scan(text="77", device="repeat scanner", ts=1.003)]


def test_other_layout_from_a_mapping() -> None:
    qwertz = {**US_LAYOUT, "KEY_Y": ("z", "Z"), "KEY_Z": ("y", "Y")}
    events = VirtualScanner(layout=qwertz).scan("Zy9")
    assert decode(events, ScanDecoder("qwertz", layout=qwertz)) == ["Zy9"]
    assert decode(events, ScanDecoder("us")) == ["Yz9"]


def test_unknown_key_name_in_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="KEY_NOPE"):
        ScanDecoder("bad", layout={"KEY_NOPE": ("x", "X")})


def test_half_scan_is_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    scanner = VirtualScanner()
    events = scanner.half_scan("12AB")
    scanner.idle(1.0)
    events += scanner.scan("999")
    with caplog.at_level(logging.WARNING, logger="hw.scanner"):
        assert decode(events) == ["999"]
    assert "half scan '12AB'" in caplog.text


def test_pause_shorter_than_timeout_keeps_the_scan(caplog: pytest.LogCaptureFixture) -> None:
    scanner = VirtualScanner()
    events = scanner.half_scan("12")
    scanner.idle(0.25)
    events += scanner.scan("34")
    with caplog.at_level(logging.WARNING, logger="hw.scanner"):
        assert decode(events) == ["1234"]
    assert caplog.text == ""


def test_junk_scan_is_dropped_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    scanner = VirtualScanner()
    events = [*scanner.junk_scan("ABC123"), *scanner.scan("OK")]
    with caplog.at_level(logging.WARNING, logger="hw.scanner"):
        assert decode(events) == ["OK"]
    assert "unmapped keys KEY_F13" in caplog.text


def test_empty_scan_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    scanner = VirtualScanner()
    with caplog.at_level(logging.WARNING, logger="hw.scanner"):
        assert decode([*scanner.tap("KEY_ENTER"), *scanner.scan("5")]) == ["5"]
    assert caplog.text == ""


MOUSE_CAPABILITIES = {ecodes.EV_KEY: [ecodes.BTN_LEFT, ecodes.BTN_RIGHT], ecodes.EV_REL: [0, 1]}


def test_match_by_name_id_auto_and_exclusion() -> None:
    honeywell = FakeInputDevice("Honeywell Imaging 1900", vendor=0x0C2E, product=0x0B61)
    keyboard = FakeInputDevice("Logitech USB Keyboard", vendor=0x046D, product=0xC31C)
    mouse = FakeInputDevice("USB Optical Mouse", capabilities=MOUSE_CAPABILITIES)

    by_name = ScannerMatch(names=("honeywell",))
    assert by_name.matches(honeywell) and not by_name.matches(keyboard)
    by_id = ScannerMatch(ids=("0c2e:0b61",))
    assert by_id.matches(honeywell) and not by_id.matches(keyboard)
    automatic = ScannerMatch()
    assert automatic.matches(honeywell) and automatic.matches(keyboard)
    assert not automatic.matches(mouse)
    assert not ScannerMatch(exclude_names=("keyboard",)).matches(keyboard)


def test_match_refuses_a_malformed_id() -> None:
    with pytest.raises(ValueError, match="vendor:product"):
        ScannerMatch(ids=("0c2e-0b61",))


class Facts:
    """Collects the watcher's facts in arrival order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Scan | tuple[str, bool]] = asyncio.Queue()

    def on_scan(self, scan: Scan) -> None:
        self.queue.put_nowait(scan)

    def on_device(self, name: str, present: bool) -> None:
        self.queue.put_nowait((name, present))

    async def next(self, timeout: float = 2.0) -> Scan | tuple[str, bool]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def take(self, count: int) -> list[Scan | tuple[str, bool]]:
        return [await self.next() for _ in range(count)]


@asynccontextmanager
async def running(watcher: ScannerWatcher) -> AsyncIterator[None]:
    task = asyncio.create_task(watcher.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_watcher_reads_two_scanners_at_once() -> None:
    async def scenario() -> None:
        facts = Facts()
        left = FakeInputDevice("Left Scanner", "/dev/input/event5")
        right = FakeInputDevice("Right Scanner", "/dev/input/event6")
        mouse = FakeInputDevice("Mouse", "/dev/input/event7", capabilities=MOUSE_CAPABILITIES)
        watcher = ScannerWatcher(
            facts.on_scan,
            facts.on_device,
            discover=lambda: [left, right, mouse],
            rescan_interval=0.05,
        )
        async with running(watcher):
            assert sorted(await facts.take(2)) == [("Left Scanner", True), ("Right Scanner", True)]
            assert left.grabbed and right.grabbed
            assert mouse.closed and not mouse.grabbed
            assert sorted(watcher.devices) == ["Left Scanner", "Right Scanner"]

            # Both type at once: interleave their event groups.
            left_events = left.scanner.scan("LEFT-0001")
            right_events = right.scanner.scan("right/0002")
            for start in range(0, max(len(left_events), len(right_events)), 2):
                left.send(left_events[start : start + 2])
                right.send(right_events[start : start + 2])
            scans = await facts.take(2)
            assert sorted((s.device, s.text) for s in scans) == [
                ("Left Scanner", "LEFT-0001"),
                ("Right Scanner", "right/0002"),
            ]
        assert left.closed and right.closed

    asyncio.run(scenario())


def test_watcher_reports_unplug_and_resumes_after_replug() -> None:
    async def scenario() -> None:
        facts = Facts()
        plugged = [FakeInputDevice("Zebra DS2208", "/dev/input/event3")]
        watcher = ScannerWatcher(
            facts.on_scan,
            facts.on_device,
            discover=lambda: list(plugged),
            rescan_interval=0.05,
        )
        async with running(watcher):
            assert await facts.next() == ("Zebra DS2208", True)
            first = plugged[0]
            first.send(first.scanner.scan("BEFORE"))
            scan = await facts.next()
            assert isinstance(scan, Scan) and scan.text == "BEFORE"

            plugged.clear()
            first.unplug()
            assert await facts.next() == ("Zebra DS2208", False)
            assert first.closed and watcher.devices == []

            second = FakeInputDevice("Zebra DS2208", "/dev/input/event3")
            loop = asyncio.get_running_loop()
            plugged_at = loop.time()
            plugged.append(second)
            assert await facts.next() == ("Zebra DS2208", True)
            assert loop.time() - plugged_at < 2.0
            second.send(second.scanner.scan("AFTER"))
            scan = await facts.next()
            assert isinstance(scan, Scan) and (scan.text, scan.device) == ("AFTER", "Zebra DS2208")

    asyncio.run(scenario())


def test_failing_scan_callback_does_not_stop_the_reader(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        facts = Facts()

        def on_scan(scan: Scan) -> None:
            if scan.text == "BOOM":
                raise RuntimeError("handler bug")
            facts.on_scan(scan)

        device = FakeInputDevice()
        watcher = ScannerWatcher(on_scan, facts.on_device, discover=lambda: [device])
        async with running(watcher):
            assert await facts.next() == (device.name, True)
            device.send([*device.scanner.scan("BOOM"), *device.scanner.scan("FINE")])
            scan = await facts.next()
            assert isinstance(scan, Scan) and scan.text == "FINE"

    with caplog.at_level(logging.ERROR, logger="hw.scanner"):
        asyncio.run(scenario())
    assert "handler bug" in caplog.text


def test_a_scan_with_events_lost_by_the_kernel_is_dropped(caplog) -> None:
    from evdev import InputEvent, ecodes

    from hw.scanner import ScanDecoder
    from simulators.scanner import VirtualScanner

    decoder = ScanDecoder("test scanner")
    events = VirtualScanner().scan("12345")
    # The kernel reports lost events with SYN_DROPPED in the middle of the stream.
    lost = InputEvent(events[4].sec, events[4].usec, ecodes.EV_SYN, ecodes.SYN_DROPPED, 0)
    results = [decoder.feed(e) for e in [*events[:4], lost, *events[6:]]]
    assert [r for r in results if r is not None] == []
    assert "SYN_DROPPED" in caplog.text
    assert [r.text for r in map(decoder.feed, VirtualScanner().scan("678")) if r] == ["678"]
    # Lost with the events: a Shift release. The scan it was in is junk; the next is not shifted.
    shift_down = next(e for e in VirtualScanner().scan("A")
                      if e.type == ecodes.EV_KEY and e.code == ecodes.KEY_LEFTSHIFT)
    decoder.feed(shift_down)
    decoder.feed(lost)
    scans = [r.text for r in map(decoder.feed, [*VirtualScanner().scan("123"),
                                                *VirtualScanner().scan("456")]) if r]
    assert scans == ["456"]
