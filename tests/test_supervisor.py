"""The supervisor on its own: restarts with backoff, health per part, short jobs, the stop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from agent.app.supervisor import PartHealth, Supervisor

FAST = {"first_retry_s": 0.01, "most_retry_s": 0.08, "settle_s": 0.05}


class Seen:
    """Every health a part went through, and an event per state reached."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, PartHealth]] = []
        self._waiting: list[tuple[str, str, asyncio.Event]] = []

    def __call__(self, name: str, health: PartHealth) -> None:
        self.changes.append((name, health))
        for part, state, event in self._waiting:
            if part == name and health.state == state:
                event.set()

    async def reach(self, name: str, state: str, timeout: float = 5) -> PartHealth:
        event = asyncio.Event()
        self._waiting.append((name, state, event))
        await asyncio.wait_for(event.wait(), timeout)
        return next(health for part, health in reversed(self.changes) if part == name)


def test_a_failing_part_is_degraded_with_its_reason_then_running_again(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        seen, runs = Seen(), []
        supervisor = Supervisor(seen, first_retry_s=0.05, most_retry_s=1, settle_s=0.05)

        async def flaky() -> None:
            runs.append(time.monotonic())
            if len(runs) <= 3:
                raise RuntimeError("bus gone")
            await asyncio.Event().wait()

        supervisor.start("power", flaky)
        degraded = await seen.reach("power", "degraded")
        assert degraded.reason == "RuntimeError: bus gone"
        assert supervisor.degraded == {"power": "RuntimeError: bus gone"}
        running = await seen.reach("power", "running")
        assert (running.restarts, running.failures, running.reason) == (3, 3, "")
        # Backoff: the waits between runs double (0.05, 0.1, 0.2 s). A busy machine only
        # lengthens a wait, so each is checked against its least.
        gaps = [later - earlier for earlier, later in itertools.pairwise(runs)]
        assert all(gap >= 0.05 * 2 ** n * 0.95 for n, gap in enumerate(gaps)), gaps
        assert await supervisor.stop() == []
        assert supervisor.parts["power"].state == "stopped"

    with caplog.at_level(logging.INFO, logger="agent.app.supervisor"):
        asyncio.run(scenario())
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, [r.getMessage() for r in caplog.records]  # once, not per try
    assert "power is running again" in caplog.text


def test_a_part_that_fails_at_once_after_each_restart_never_shows_running() -> None:
    async def scenario() -> None:
        seen = Seen()
        supervisor = Supervisor(seen, **FAST)

        async def broken() -> None:
            raise OSError(19, "No such device")

        supervisor.start("scanner", broken)
        await asyncio.sleep(0.5)  # the scenario: many tries of a part that never works
        await supervisor.stop()
        states = [health.state for _, health in seen.changes]
        assert states[0] == "running" and states[-1] == "stopped"
        assert "running" not in states[1:-1], states  # never "running" between failures
        assert supervisor.parts["scanner"].failures >= 5

    asyncio.run(scenario())


def test_a_part_that_returns_has_ended() -> None:
    async def scenario() -> None:
        seen = Seen()
        supervisor = Supervisor(seen, **FAST)

        async def nothing_to_do() -> None:
            return None

        supervisor.start("printer", nothing_to_do)
        assert (await seen.reach("printer", "ended")).failures == 0
        assert supervisor.degraded == {}
        await supervisor.stop()

    asyncio.run(scenario())


def test_a_failing_job_shows_against_its_part_until_one_succeeds(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        seen = Seen()
        supervisor = Supervisor(seen, **FAST)

        async def job(fail: bool) -> None:
            if fail:
                raise ValueError("no such order")

        supervisor.spawn("panel", job(True))
        assert (await seen.reach("panel", "degraded")).reason == "ValueError: no such order"
        supervisor.spawn("panel", job(False))
        assert (await seen.reach("panel", "running")).failures == 1
        await supervisor.stop()

    with caplog.at_level(logging.ERROR, logger="agent.app.supervisor"):
        asyncio.run(scenario())
    assert "panel failed: ValueError: no such order" in caplog.text


def test_the_stop_names_a_part_that_will_not_stop_and_does_not_wait_for_ever(
        caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        supervisor = Supervisor(Seen(), **FAST)
        release = asyncio.Event()

        async def stubborn() -> None:
            while not release.is_set():
                try:
                    await asyncio.sleep(10)
                except asyncio.CancelledError:
                    continue  # a part that swallows its cancellation
            return None

        async def polite() -> None:
            await asyncio.Event().wait()

        supervisor.start("uplink", stubborn)
        supervisor.start("power", polite)
        await asyncio.sleep(0)
        started = time.monotonic()
        assert await supervisor.stop(timeout=0.2) == ["uplink"]
        assert time.monotonic() - started < 1
        assert supervisor.parts["power"].state == "stopped"
        release.set()

    with caplog.at_level(logging.ERROR, logger="agent.app.supervisor"):
        asyncio.run(scenario())
    assert "uplink did not stop within 0.2 s" in caplog.text


def test_a_part_that_cannot_start_is_degraded_with_one_line(
        caplog: pytest.LogCaptureFixture) -> None:
    supervisor = Supervisor(Seen())
    with caplog.at_level(logging.ERROR, logger="agent.app.supervisor"):
        supervisor.fail("panel", "BadPinFactory: Unable to load any default pin factory!")
    assert supervisor.degraded == {"panel": "BadPinFactory: Unable to load any default pin "
                                            "factory!"}
    assert [r.getMessage() for r in caplog.records] == [
        "panel cannot start: BadPinFactory: Unable to load any default pin factory!"]


def test_a_part_degraded_by_one_failed_job_is_running_again_after_a_good_one() -> None:
    async def scenario() -> None:
        seen = Seen()
        supervisor = Supervisor(seen, **FAST)

        async def drain() -> None:
            await asyncio.Event().wait()

        async def flush(fail: bool) -> None:
            if fail:
                raise OSError(28, "No space left on device")

        supervisor.start("uplink_drain", drain)
        supervisor.spawn("uplink_drain", flush(True))
        assert (await seen.reach("uplink_drain", "degraded")).reason.startswith("OSError")
        supervisor.spawn("uplink_drain", flush(False))
        await seen.reach("uplink_drain", "running")
        assert supervisor.degraded == {}
        await supervisor.stop()

    asyncio.run(scenario())
