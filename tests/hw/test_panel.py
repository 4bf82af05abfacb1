"""Panel driver on gpiozero's MockFactory: button facts reach the asyncio loop, LEDs light."""

from __future__ import annotations

import asyncio
import threading

import pytest
from gpiozero.pins.mock import MockFactory

from agent.config import PanelConfig
from hw.panel import Panel, PanelEvent, PanelFact

PINS = PanelConfig().pins()
OFFLINE, REPRINT, MODE_LED, UPLINK_LED, POWER_LED = (
    PINS[key] for key in ("offline_button", "reprint_button", "mode_led", "uplink_led", "power_led")
)
PRESSED, HELD, RELEASED = PanelFact.PRESSED, PanelFact.HELD, PanelFact.RELEASED
SHUTDOWN = 5
LONG_PRESS = 0.1


class Recorder:
    """Receives panel events and notes the thread each one arrived on."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[PanelEvent] = asyncio.Queue()
        self.threads: set[int] = set()

    def __call__(self, event: PanelEvent) -> None:
        self.threads.add(threading.get_ident())
        self.events.put_nowait(event)

    async def next_fact(self, timeout: float = 2.0) -> tuple[str, PanelFact]:
        event = await asyncio.wait_for(self.events.get(), timeout)
        return event.button, event.fact

    async def assert_quiet(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        assert self.events.empty()


def make_panel(recorder: Recorder, factory: MockFactory, **pins: int | None) -> Panel:
    return Panel(
        asyncio.get_running_loop(),
        recorder,
        {**PINS, **pins},
        long_press=LONG_PRESS,
        bounce_time=None,
        pin_factory=factory,
    )


def test_press_on_a_gpiozero_thread_reports_pressed_and_released_on_the_loop() -> None:
    async def scenario() -> None:
        factory, recorder = MockFactory(), Recorder()
        with make_panel(recorder, factory):
            button = factory.pin(OFFLINE)
            await asyncio.to_thread(button.drive_low)
            await asyncio.to_thread(button.drive_high)
            assert await recorder.next_fact() == ("offline", PRESSED)
            assert await recorder.next_fact() == ("offline", RELEASED)
            assert recorder.threads == {threading.get_ident()}
            await recorder.assert_quiet(LONG_PRESS * 2)

    asyncio.run(scenario())


def test_long_press_reports_held_once_between_pressed_and_released() -> None:
    async def scenario() -> None:
        factory, recorder = MockFactory(), Recorder()
        with make_panel(recorder, factory):
            button = factory.pin(OFFLINE)
            button.drive_low()
            assert await recorder.next_fact() == ("offline", PRESSED)
            assert await recorder.next_fact() == ("offline", HELD)
            await recorder.assert_quiet(LONG_PRESS * 2)  # held once, not repeated
            button.drive_high()
            assert await recorder.next_fact() == ("offline", RELEASED)

            button.drive_low()  # a short press after a long one is not held
            button.drive_high()
            assert await recorder.next_fact() == ("offline", PRESSED)
            assert await recorder.next_fact() == ("offline", RELEASED)
            await recorder.assert_quiet(LONG_PRESS * 2)

    asyncio.run(scenario())


def test_every_fitted_button_reports_the_same_facts() -> None:
    async def scenario() -> None:
        factory, recorder = MockFactory(), Recorder()
        with make_panel(recorder, factory, shutdown_button=SHUTDOWN) as panel:
            assert panel.buttons == {"offline", "reprint", "shutdown"}
            factory.pin(SHUTDOWN).drive_low()
            factory.pin(SHUTDOWN).drive_high()
            assert [await recorder.next_fact() for _ in range(2)] == [
                ("shutdown", PRESSED), ("shutdown", RELEASED)]
            await recorder.assert_quiet(LONG_PRESS * 2)
            factory.pin(SHUTDOWN).drive_low()
            assert [await recorder.next_fact() for _ in range(2)] == [
                ("shutdown", PRESSED), ("shutdown", HELD)]

            factory.pin(REPRINT).drive_low()
            assert await recorder.next_fact() == ("reprint", PRESSED)
        with make_panel(recorder, factory) as panel:
            assert panel.buttons == {"offline", "reprint"}

    asyncio.run(scenario())


async def count_toggles(factory: MockFactory, pin_number: int | str | None, seconds: float) -> int:
    """How often the pin changes state in the next ``seconds``."""
    pin = factory.pin(pin_number)
    pin.clear_states()
    await asyncio.sleep(seconds)
    return len(pin.states) - 1


def test_leds_light_darken_and_blink() -> None:
    async def scenario() -> None:
        factory, recorder = MockFactory(), Recorder()
        with make_panel(recorder, factory) as panel:
            assert not any(factory.pin(p).state for p in (MODE_LED, UPLINK_LED, POWER_LED))
            panel.set_led("mode", "on")
            assert factory.pin(MODE_LED).state
            panel.set_led("mode", "off")
            assert not factory.pin(MODE_LED).state

            panel.set_led("uplink", "blink_fast")
            assert await count_toggles(factory, UPLINK_LED, 0.7) >= 3
            panel.set_led("power", "blink_slow")
            assert await count_toggles(factory, POWER_LED, 0.4) <= 1  # on, and on for 1 s
            assert factory.pin(POWER_LED).state

            panel.set_led("uplink", "on")  # a steady setting stops the blink
            assert await count_toggles(factory, UPLINK_LED, 0.4) == 0
            assert factory.pin(UPLINK_LED).state
        assert not factory.pin(UPLINK_LED).state

    asyncio.run(scenario())


def test_a_blink_set_again_goes_on_blinking() -> None:
    """The agent sets every LED twice a second: a blink must not start over each time."""

    async def scenario() -> None:
        factory, recorder = MockFactory(), Recorder()
        with make_panel(recorder, factory) as panel:
            toggles = 0
            for _ in range(5):  # 2.5 s
                panel.set_led("power", "blink_slow")
                toggles += await count_toggles(factory, POWER_LED, 0.5)
            assert toggles >= 2  # off after 1 s, on again after 2 s

    asyncio.run(scenario())


def test_unfitted_led_is_left_alone_and_bad_names_are_refused() -> None:
    async def scenario() -> None:
        factory, recorder = MockFactory(), Recorder()
        with make_panel(recorder, factory, power_led=None) as panel:
            panel.set_led("power", "blink_fast")
            with pytest.raises(ValueError, match="unknown LED"):
                panel.set_led("buzzer", "on")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="unknown LED pattern"):
                panel.set_led("mode", "strobe")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="unknown panel pins"):
            make_panel(recorder, factory, buzzer=6)
        with pytest.raises(ValueError, match=r"missing \['power_led'\]"):
            Panel(asyncio.get_running_loop(), recorder,
                  {key: pin for key, pin in PINS.items() if key != "power_led"},
                  long_press=LONG_PRESS, pin_factory=factory)
        with pytest.raises(ValueError, match="offline_button"):
            make_panel(recorder, factory, offline_button=None)

    asyncio.run(scenario())


def test_close_releases_the_pins() -> None:
    async def scenario() -> None:
        factory, recorder = MockFactory(), Recorder()
        make_panel(recorder, factory).close()
        with make_panel(recorder, factory):
            factory.pin(REPRINT).drive_low()
            assert await recorder.next_fact() == ("reprint", PRESSED)

    asyncio.run(scenario())
